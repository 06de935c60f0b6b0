//! HTTP answers with JSON bodies, shared by every HTTP surface (pages, health, upgrades, the
//! API): one shape for errors everywhere, `{"error": code, "message": text}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The credential of an `Authorization: Bearer <credential>` header (a token or an API key).
pub fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// An HTTP error with a JSON body: `{"error": code, "message": ...}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        serde_json::json!({ "error": code, "message": message }).to_string(),
    )
}

/// 405 for a method the resource does not take, saying which it does (RFC 9110 §15.5.6).
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this resource takes {allow}"),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}
