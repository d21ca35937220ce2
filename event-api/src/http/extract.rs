//! Request extractors that turn every malformed input into a 400 naming the field, so axum's
//! plain-text rejections never reach a client: JSON bodies ([`Body`]), query strings
//! ([`Params`]) and UUID path segments ([`PathId`]).

use super::error::ApiError;
use crate::store::PageRequest;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// A JSON request body type: its field names (anything else is refused, naming the field) and
/// the ones that must be present.
pub trait RequestBody: DeserializeOwned {
    const FIELDS: &'static [&'static str];
    const REQUIRED: &'static [&'static str];
}

/// A JSON body of type `T`, or a 400 naming what is wrong with it.
pub struct Body<T>(pub T);

/// Checks `bytes` as a `T`: valid JSON, an object, no unknown field, every required field, and
/// each field of the right type (the error names the path of the first bad field).
pub fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("malformed JSON at line {} column {}", e.line(), e.column()),
        )
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    if let Some(unknown) = obj.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(unknown.clone(), "unknown field"));
    }
    if let Some((field, _)) = obj.iter().find(|(_, v)| contains_nul(v)) {
        return Err(ApiError::invalid(
            field.clone(),
            "must not contain NUL characters",
        ));
    }
    if let Some(missing) = T::REQUIRED
        .iter()
        .find(|f| obj.get(**f).is_none_or(serde_json::Value::is_null))
    {
        return Err(ApiError::invalid(*missing, "is required"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, e.into_inner().to_string())
    })
}

/// PostgreSQL text cannot hold U+0000; such input is refused up front instead of failing in the
/// database.
fn contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::invalid("body", "could not be read")
            }
        })?;
        parse_body(&bytes).map(Body)
    }
}

/// A UUID path segment (`/:id`), or a 400 naming `id`.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("id", "must be a UUID"))?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::invalid("id", "must be a UUID"))
    }
}

/// The query string as name/value pairs, read field by field with typed getters that name the
/// field on error. Unknown parameters are ignored; empty values count as absent.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("query", "is not a valid query string"))?;
        if let Some((name, _)) = pairs
            .iter()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(ApiError::invalid(
                name.replace('\0', ""),
                "must not contain NUL characters",
            ));
        }
        Ok(Params(pairs))
    }
}

/// The largest page size a list answers.
pub const MAX_PAGE_SIZE: u32 = 100;
const DEFAULT_PAGE_SIZE: u32 = 20;

impl Params {
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.str(name).map(str::to_owned)
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.str(name)
            .map(|v| Uuid::parse_str(v).map_err(|_| ApiError::invalid(name, "must be a UUID")))
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.str(name)
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::invalid(name, "must be true or false")),
            })
            .transpose()
    }

    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(name, format!("must be an integer from {min} to {max}"))
                    })
            })
            .transpose()
    }

    /// An RFC 3339 time (`2026-01-31T12:00:00Z`) or a date (`2026-01-31`, midnight UTC).
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.str(name)
            .map(|v| {
                parse_time(v)
                    .ok_or_else(|| ApiError::invalid(name, "must be an ISO-8601 date or time"))
            })
            .transpose()
    }

    /// A value from a fixed set, parsed by `parse`; the error lists `allowed`.
    pub fn one_of<T>(
        &self,
        name: &str,
        allowed: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        self.str(name)
            .map(|v| {
                parse(v).ok_or_else(|| ApiError::invalid(name, format!("must be one of {allowed}")))
            })
            .transpose()
    }

    /// `page` (from 1, default 1) and `pageSize` (1 to 100, default 20).
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let page = self.int("page", 1, i64::from(u32::MAX / 2))?.unwrap_or(1);
        let page_size = self
            .int("pageSize", 1, i64::from(MAX_PAGE_SIZE))?
            .unwrap_or(i64::from(DEFAULT_PAGE_SIZE));
        Ok(PageRequest {
            page: u32::try_from(page).unwrap_or(1),
            page_size: u32::try_from(page_size).unwrap_or(DEFAULT_PAGE_SIZE),
        })
    }
}

fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Probe {
        camera_id: Uuid,
        count: Option<u32>,
    }
    impl RequestBody for Probe {
        const FIELDS: &'static [&'static str] = &["cameraId", "count"];
        const REQUIRED: &'static [&'static str] = &["cameraId"];
    }

    fn field_of(r: Result<Probe, ApiError>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bodies_name_the_bad_field() {
        assert_eq!(field_of(parse_body(b"{not json")), "body");
        assert_eq!(field_of(parse_body(b"[1]")), "body");
        assert_eq!(field_of(parse_body(b"{\"x\":1,\"cameraId\":\"a\"}")), "x");
        assert_eq!(field_of(parse_body(b"{}")), "cameraId");
        assert_eq!(
            field_of(parse_body(b"{\"cameraId\":\"a\\u0000b\"}")),
            "cameraId"
        );
        assert_eq!(field_of(parse_body(b"{\"cameraId\":\"nope\"}")), "cameraId");
        assert_eq!(
            field_of(parse_body(
                b"{\"cameraId\":\"0195ffb8-0000-7000-8000-000000000000\",\"count\":-1}"
            )),
            "count"
        );
        let ok: Probe =
            parse_body(b"{\"cameraId\":\"0195ffb8-0000-7000-8000-000000000000\"}").unwrap();
        assert_eq!(
            ok.camera_id.to_string(),
            "0195ffb8-0000-7000-8000-000000000000"
        );
        assert_eq!(ok.count, None);
    }

    proptest::proptest! {
        /// Any bytes at all give a `Probe` or a 400 naming a field; never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            match parse_body::<Probe>(&bytes) {
                Ok(_) => {}
                Err(ApiError::Invalid { field, .. }) => proptest::prop_assert!(!field.is_empty()),
                Err(other) => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }

        /// JSON objects with arbitrary keys and string values are refused by field name.
        #[test]
        fn arbitrary_objects_name_a_field(map in proptest::collection::hash_map("[a-zA-Z]{1,8}", ".{0,16}", 0..5)) {
            let bytes = serde_json::to_vec(&map).unwrap();
            if let Err(ApiError::Invalid { field, .. }) = parse_body::<Probe>(&bytes) {
                proptest::prop_assert!(field == "body" || field == "cameraId" || field == "count" || map.contains_key(&field));
            }
        }
    }

    #[test]
    fn pagination_defaults_and_bounds() {
        let p = Params::from_pairs(&[]).page().unwrap();
        assert_eq!((p.page, p.page_size), (1, 20));
        let p = Params::from_pairs(&[("page", "3"), ("pageSize", "10")])
            .page()
            .unwrap();
        assert_eq!((p.offset(), p.limit()), (20, 10));
        for bad in [("page", "0"), ("pageSize", "101"), ("pageSize", "x")] {
            assert!(matches!(
                Params::from_pairs(&[bad]).page(),
                Err(ApiError::Invalid { field, .. }) if field == bad.0
            ));
        }
    }

    #[test]
    fn times_accept_rfc3339_and_dates() {
        let p = Params::from_pairs(&[
            ("a", "2026-01-31"),
            ("b", "2026-01-31T10:00:00+02:00"),
            ("c", "yesterday"),
        ]);
        assert_eq!(
            p.time("a").unwrap().unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            p.time("b").unwrap().unwrap().to_rfc3339(),
            "2026-01-31T08:00:00+00:00"
        );
        assert!(p.time("c").is_err());
        assert_eq!(p.time("missing").unwrap(), None);
    }
}
