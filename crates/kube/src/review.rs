//! ServiceAccount tokens judged by the API server: a TokenReview (`authentication.k8s.io/v1`) per certificate
//! request, as istiod does. The control plane needs the `create` verb on `tokenreviews` (`podmesh install` grants
//! it), and nothing else for this.
//!
//! A token is accepted when the API server says it is authenticated for the audience podmesh asks for (`podmesh`,
//! the audience of the projected token `podmesh inject` mounts), and it is a ServiceAccount's
//! (`system:serviceaccount:<namespace>:<name>`). The pod it is bound to (`authentication.kubernetes.io/pod-name`)
//! is passed on: the CA signs that pod's identity only if the pod runs as that ServiceAccount
//! (`podmesh_control::certs::sign_for_account`).

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::authentication::v1::{TokenReview as Review, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};
use podmesh_control::{ReviewError, Reviewed, TokenReview};

/// The audience of the tokens sidecars present (the projected token's `audience`).
pub const AUDIENCE: &str = podmesh_inject::TOKEN_AUDIENCE;

/// The `user.extra` key naming the pod a projected token is bound to.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// Reviews tokens with the API server `client` talks to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl TokenReviewer {
    pub fn new(client: Client, audience: &str) -> TokenReviewer {
        TokenReviewer { client, audience: audience.to_string() }
    }

    async fn ask(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let api: Api<Review> = Api::all(self.client.clone());
        let review = Review {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![self.audience.clone()]) },
            ..Review::default()
        };
        let answer = api.create(&PostParams::default(), &review).await.map_err(|e| match e {
            kube::Error::Api(s) => ReviewError::Unavailable(format!(
                "the API server answered the TokenReview {} {}: {} (the control plane needs `create` on \
                 tokenreviews.authentication.k8s.io)",
                s.code, s.reason, s.message
            )),
            e => ReviewError::Unavailable(format!("TokenReview: {e}")),
        })?;
        judge(answer, &self.audience)
    }
}

impl TokenReview for TokenReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Reviewed, ReviewError>> + Send + 'a>> {
        Box::pin(self.ask(token))
    }
}

/// What the API server's answer says of the token.
fn judge(answer: Review, audience: &str) -> Result<Reviewed, ReviewError> {
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "not authenticated".to_string());
        return Err(ReviewError::Refused(why));
    }
    // The API server answers the audiences the token is valid for among those asked; none means it ignored them
    // (an authenticator that does not support audiences), which is not good enough.
    if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
        return Err(ReviewError::Refused(format!("the token is not for the audience {audience:?}")));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) =
        username.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':'))
    else {
        return Err(ReviewError::Refused(format!("{username:?} is not a ServiceAccount")));
    };
    if namespace.is_empty() || service_account.is_empty() || service_account.contains(':') {
        return Err(ReviewError::Refused(format!("{username:?} is not a ServiceAccount")));
    }
    let pod = user.extra.unwrap_or_default().remove(POD_NAME).and_then(|names| match names.as_slice() {
        [one] if !one.is_empty() => Some(one.clone()),
        _ => None,
    });
    Ok(Reviewed { namespace: namespace.to_string(), service_account: service_account.to_string(), pod })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn answer(status: serde_json::Value) -> Review {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn only_an_authenticated_service_account_token_for_podmesh_is_accepted() {
        let ok = serde_json::json!({"authenticated": true, "audiences": ["podmesh"],
            "user": {"username": "system:serviceaccount:shop:web", "extra": {POD_NAME: ["web-1"]}}});
        assert_eq!(
            judge(answer(ok.clone()), AUDIENCE).unwrap(),
            Reviewed { namespace: "shop".into(), service_account: "web".into(), pod: Some("web-1".into()) }
        );
        let refused = |status: serde_json::Value| match judge(answer(status), AUDIENCE) {
            Err(ReviewError::Refused(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(serde_json::json!({"authenticated": false, "error": "token expired"})), "token expired");
        assert_eq!(refused(serde_json::json!({})), "not authenticated");
        let mut other_audience = ok.clone();
        other_audience["audiences"] = serde_json::json!(["https://kubernetes.default.svc"]);
        assert!(refused(other_audience).contains("audience"));
        let mut no_audience = ok.clone();
        no_audience.as_object_mut().unwrap().remove("audiences");
        assert!(refused(no_audience).contains("audience"));
        for user in ["alice", "system:serviceaccount:shop", "system:serviceaccount::web", "system:node:n1"] {
            let mut s = ok.clone();
            s["user"]["username"] = serde_json::json!(user);
            assert!(refused(s).contains("not a ServiceAccount"), "{user}");
        }
        // A token bound to no pod (or, oddly, to two): accepted as the account's, naming no pod.
        let mut unbound = ok.clone();
        unbound["user"]["extra"] = serde_json::json!({});
        assert_eq!(judge(answer(unbound), AUDIENCE).unwrap().pod, None);
        let mut two = ok;
        two["user"]["extra"][POD_NAME] = serde_json::json!(["a", "b"]);
        assert_eq!(judge(answer(two), AUDIENCE).unwrap().pod, None);
    }
}
