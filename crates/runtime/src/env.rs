//! A container's environment and command line, made as the kubelet makes them. Variables are set in the order
//! written, each value's `$(NAME)` references expanded with the variables set before it; a downward-API variable
//! (`valueFrom.fieldRef`) carries the pod's field. Then `$(NAME)` references in the command and arguments are
//! expanded with the whole environment. `$$` is a literal `$`, and a reference to a variable that is not set stays
//! as written (Kubernetes' `third_party/forked/golang/expansion`).

use std::net::IpAddr;

use podmesh_model::{Container, EnvValue, Pod, PodField};

/// What the runtime knows of a pod besides its manifest: the node it runs on.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// `spec.nodeName`.
    pub node_name: &'a str,
    /// `status.hostIP`: the node's address on the pods' network.
    pub host_ip: IpAddr,
}

/// Expands `$(NAME)` references in `input` with `lookup`. `$$` is a literal `$`; a reference whose name `lookup`
/// does not know, or that is not closed, stays as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in the order its variables were first set (a variable set twice keeps its first
/// place and its last value, as the kubelet does).
pub fn environment(container: &Container, pod: &Pod, placement: Placement<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(container.env.len());
    for var in &container.env {
        let value = match &var.value {
            EnvValue::Value(v) => expand(v, |name| lookup(&env, name)),
            EnvValue::Field(field) => field_value(field, pod, placement),
        };
        match env.iter_mut().find(|(n, _)| *n == var.name) {
            Some(slot) => slot.1 = value,
            None => env.push((var.name.clone(), value)),
        }
    }
    env
}

/// The program and its arguments (`command`, then `args`), each expanded with `env`. Empty when the container
/// has no command: images are ignored, so there is no entrypoint to fall back on.
pub fn command_line(container: &Container, env: &[(String, String)]) -> Vec<String> {
    if container.command.is_empty() {
        return Vec::new();
    }
    container.command.iter().chain(&container.args).map(|s| expand(s, |name| lookup(env, name))).collect()
}

fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// A downward-API field's value; a label or annotation the pod does not have is empty, as in Kubernetes.
fn field_value(field: &PodField, pod: &Pod, placement: Placement<'_>) -> String {
    match field {
        PodField::Name => pod.key.name.to_string(),
        PodField::Namespace => pod.key.namespace.to_string(),
        PodField::Label(k) => pod.labels.get(k).cloned().unwrap_or_default(),
        PodField::Annotation(k) => pod.annotations.get(k).cloned().unwrap_or_default(),
        PodField::NodeName => placement.node_name.to_string(),
        PodField::ServiceAccountName => pod.service_account.clone(),
        PodField::HostIp => placement.host_ip.to_string(),
        // A pod has one address here; `status.podIPs` lists it alone.
        PodField::PodIp | PodField::PodIps => pod.ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use podmesh_model::EnvVar;

    fn vars(name: &str) -> Option<String> {
        match name {
            "VAR_A" => Some("A".into()),
            "VAR_B" => Some("B".into()),
            "VAR_EMPTY" => Some(String::new()),
            "" => None,
            _ => None,
        }
    }

    /// Kubernetes' expansion rules (`third_party/forked/golang/expansion`, which the kubelet uses), case by case.
    #[test]
    fn expansion_follows_kubernetes() {
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_A)bar", "foo\\Abar"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$(VAR_EMPTY)", ""),
            ("x$(VAR_EMPTY)y", "xy"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
            ("$()", "$()"),
            ("$", "$"),
            ("$$", "$"),
            ("$VAR_A", "$VAR_A"),
            ("$ $(VAR_A)", "$ A"),
            ("((VAR_A))", "((VAR_A))"),
            ("plain", "plain"),
            ("", ""),
            ("é$(VAR_A)ü$", "éAü$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "expanding {input:?}");
        }
    }

    fn pod() -> Pod {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {tier: front}, annotations: {owner: team-a}}
spec:
  serviceAccountName: web
  containers:
    - name: app
      command: [podmesh, echo, "--listen=$(POD_IP):$(PORT)"]
      args: ["$(GREETING)", "$(UNSET)", "$$(PORT)"]
      env:
        - {name: LATER, value: "$(PORT)"}
        - {name: PORT, value: "8080"}
        - {name: GREETING, value: "hello from $(POD_NAME) in $(POD_NS) on port $(PORT)"}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: POD_IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
        - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
        - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
        - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
        - {name: OWNER, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['owner']"}}}
        - {name: MISSING, valueFrom: {fieldRef: {fieldPath: "metadata.labels['nope']"}}}
status: {podIP: 10.244.0.7}
"#;
        let loaded = podmesh_model::load_str(&[("pod.yaml", text)]).unwrap();
        loaded.cluster.pods.into_values().next().unwrap()
    }

    const PLACEMENT: Placement<'static> =
        Placement { node_name: "node-1", host_ip: IpAddr::V4(std::net::Ipv4Addr::new(10, 244, 0, 1)) };

    #[test]
    fn variables_refer_to_the_ones_before_them_and_carry_the_pods_fields() {
        let pod = pod();
        let env = environment(&pod.containers[0], &pod, PLACEMENT);
        let got: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                // PORT is set after LATER: the reference stays as written, as in Kubernetes.
                ("LATER", "$(PORT)"),
                ("PORT", "8080"),
                // POD_NAME and POD_NS come later too.
                ("GREETING", "hello from $(POD_NAME) in $(POD_NS) on port 8080"),
                ("POD_NAME", "web-0"),
                ("POD_NS", "shop"),
                ("POD_IP", "10.244.0.7"),
                ("POD_IPS", "10.244.0.7"),
                ("HOST_IP", "10.244.0.1"),
                ("NODE", "node-1"),
                ("SA", "web"),
                ("TIER", "front"),
                ("OWNER", "team-a"),
                ("MISSING", ""),
            ]
        );
        // The command line sees every variable.
        assert_eq!(
            command_line(&pod.containers[0], &env),
            [
                "podmesh",
                "echo",
                "--listen=10.244.0.7:8080",
                "hello from $(POD_NAME) in $(POD_NS) on port 8080",
                "$(UNSET)",
                "$(PORT)",
            ]
        );
    }

    #[test]
    fn a_variable_set_twice_keeps_its_place_and_its_last_value() {
        let pod = pod();
        let mut c = pod.containers[0].clone();
        c.env = vec![
            EnvVar { name: "A".into(), value: EnvValue::Value("1".into()) },
            EnvVar { name: "B".into(), value: EnvValue::Value("$(A)".into()) },
            EnvVar { name: "A".into(), value: EnvValue::Value("2-$(B)".into()) },
        ];
        let env = environment(&c, &pod, PLACEMENT);
        assert_eq!(env, [("A".to_string(), "2-1".to_string()), ("B".to_string(), "1".to_string())]);
    }

    #[test]
    fn a_container_without_a_command_runs_nothing() {
        let pod = pod();
        let mut c = pod.containers[0].clone();
        c.command.clear();
        assert!(command_line(&c, &[]).is_empty());
    }
}
