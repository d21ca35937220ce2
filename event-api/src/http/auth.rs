//! Authentication and authorization: argon2 password hashes, HS256 access tokens (JWT),
//! rotating refresh tokens stored as hashes, the [`AuthUser`] extractor with its role checks,
//! and the `/auth/*` and `/users/profile` routes.

use super::error::ApiError;
use super::extract::{Body, RequestBody};
use super::AppState;
use crate::store::users::{Rotation, UserRow};
use crate::store::StoreError;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

/// What a user may do. `Admin` ⊃ `Operator` ⊃ `Viewer`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "VIEWER",
            Role::Operator => "OPERATOR",
            Role::Admin => "ADMIN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "VIEWER" => Some(Role::Viewer),
            "OPERATOR" => Some(Role::Operator),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The keys and lifetimes of tokens.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl AuthKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl,
            refresh_ttl,
        }
    }
}

/// `iss` of every access token, checked on the way in.
pub const ISSUER: &str = "camrec-event-api";
/// `aud` of every access token: the API it opens, checked on the way in.
pub const AUDIENCE: &str = "camrec-api";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    role: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// HS256 only, with `exp`, `iss` and `aud` required and checked.
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

/// The authenticated caller, with the role currently stored for them: a role change or a
/// deleted user takes effect at the next request, not when the token expires.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: Uuid,
    pub role: Role,
}

/// An authenticated caller whose role is at least OPERATOR (403 otherwise). Checked before the
/// body is read, so a wrong role is a 403 whatever the body holds.
pub struct Operator(pub AuthUser);

/// An authenticated caller whose role is ADMIN (403 otherwise).
pub struct Admin(pub AuthUser);

async fn with_role(parts: &mut Parts, state: &AppState, role: Role) -> Result<AuthUser, ApiError> {
    let user = AuthUser::from_request_parts(parts, state).await?;
    if user.role >= role {
        Ok(user)
    } else {
        Err(ApiError::Forbidden)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, Role::Operator).await.map(Operator)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        with_role(parts, state, Role::Admin).await.map(Admin)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let claims =
            jsonwebtoken::decode::<Claims>(token.trim(), &state.auth.decoding, &validation())
                .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?
                .claims;
        let role = stored_role(state, claims.sub).await?;
        Ok(AuthUser {
            id: claims.sub,
            role,
        })
    }
}

/// The role `user` has now, read from the database. A user that no longer exists is
/// unauthorized.
async fn stored_role(state: &AppState, user: Uuid) -> Result<Role, ApiError> {
    let row = match state.store.user(user).await {
        Ok(u) => u,
        Err(StoreError::NotFound) => {
            return Err(ApiError::Unauthorized("invalid or expired token"))
        }
        Err(e) => return Err(ApiError::from_store("user", e)),
    };
    Role::parse(&row.role).ok_or(ApiError::Unauthorized("invalid role"))
}

/// Hashes a password (Argon2id, on the hashing threads: it is deliberately slow).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    match super::passwords::hash(password).await {
        Some(Ok(phc)) => Ok(phc),
        Some(Err(e)) => Err(ApiError::Internal(e.to_string())),
        None => Err(ApiError::Internal(
            "the password hashing thread failed".into(),
        )),
    }
}

/// Checks `password` against `hash`; with no user, against a dummy hash so that unknown
/// usernames take as long as wrong passwords.
async fn verify_password(password: String, hash: Option<String>) -> bool {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let hash = match hash {
        Some(h) => h,
        None => DUMMY
            .get_or_init(|| async {
                hash_password("camrec-dummy-password".into())
                    .await
                    .unwrap_or_default()
            })
            .await
            .clone(),
    };
    super::passwords::verify(password, hash).await
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn new_refresh_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The answer of login and refresh.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    access_token: String,
    refresh_token: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    refresh_expires_at: DateTime<Utc>,
}

fn access_token(keys: &AuthKeys, user: &UserRow, now: DateTime<Utc>) -> Result<String, ApiError> {
    let claims = Claims {
        sub: user.id,
        role: user.role.clone(),
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now.timestamp(),
        exp: now.timestamp() + i64::try_from(keys.access_ttl.as_secs()).unwrap_or(900),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn refresh_expiry(keys: &AuthKeys, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::seconds(i64::try_from(keys.refresh_ttl.as_secs()).unwrap_or(0))
}

/// The client's address (the TCP peer), when the server was started with it; behind a proxy
/// that is the proxy.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Self(peer.map(|c| c.0.ip())))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

impl RequestBody for LoginRequest {
    const FIELDS: &'static [&'static str] = &["username", "password"];
    const REQUIRED: &'static [&'static str] = &["username", "password"];
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    refresh_token: String,
}

impl RequestBody for RefreshRequest {
    const FIELDS: &'static [&'static str] = &["refreshToken"];
    const REQUIRED: &'static [&'static str] = &["refreshToken"];
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OkResponse {
    ok: bool,
}

/// A user as the API shows it (never the password hash).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    id: Uuid,
    username: String,
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserJson {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "wrong username or password"),
        (status = 429, description = "too many failed logins for this username or address; see Retry-After")))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Body(req): Body<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    // Nobody has a longer name or password (POST /users refuses them); hashing megabytes of
    // password would cost the server, not the caller.
    if req.username.len() > 64 {
        return Err(ApiError::invalid(
            "username",
            "must be at most 64 characters",
        ));
    }
    if req.password.len() > 256 {
        return Err(ApiError::invalid(
            "password",
            "must be at most 256 characters",
        ));
    }
    let now = std::time::Instant::now();
    if let Err(retry_after) = state.login.attempt(&req.username, address, now) {
        tracing::warn!(username = ?req.username, client = ?address, "login refused: too many failures");
        return Err(ApiError::TooMany { retry_after });
    }
    let user = match state.store.user_by_name(&req.username).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(ApiError::from_store("user", e)),
    };
    let ok = verify_password(req.password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            tracing::warn!(username = ?req.username, client = ?address, "login failed");
            return Err(ApiError::Unauthorized("wrong username or password"));
        }
    };
    state.login.succeeded(&req.username, address);
    issue(&state, &user, uuid::Uuid::now_v7()).await.map(Json)
}

async fn issue(state: &AppState, user: &UserRow, family: Uuid) -> Result<TokenPair, ApiError> {
    let now = Utc::now();
    let refresh = new_refresh_token();
    let refresh_expires_at = refresh_expiry(&state.auth, now);
    state
        .store
        .insert_refresh_token(user.id, &sha256_hex(&refresh), family, refresh_expires_at)
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok(TokenPair {
        access_token: access_token(&state.auth, user, now)?,
        refresh_token: refresh,
        expires_in: state.auth.access_ttl.as_secs(),
        refresh_expires_at,
    })
}

#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid, expired or reused refresh token")))]
pub async fn refresh(
    State(state): State<AppState>,
    Body(req): Body<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let now = Utc::now();
    let new = new_refresh_token();
    let refresh_expires_at = refresh_expiry(&state.auth, now);
    let rotation = state
        .store
        .rotate_refresh_token(
            &sha256_hex(&req.refresh_token),
            &sha256_hex(&new),
            now,
            refresh_expires_at,
        )
        .await
        .map_err(|e| ApiError::from_store("refresh token", e))?;
    let user_id = match rotation {
        Rotation::Rotated { user_id } => user_id,
        Rotation::Invalid => {
            return Err(ApiError::Unauthorized("invalid or expired refresh token"))
        }
        Rotation::Reused => {
            tracing::warn!("a revoked refresh token was reused; its family is revoked");
            return Err(ApiError::Unauthorized("invalid or expired refresh token"));
        }
    };
    let user = state.store.user(user_id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::Unauthorized("invalid or expired refresh token"),
        e => ApiError::from_store("user", e),
    })?;
    Ok(Json(TokenPair {
        access_token: access_token(&state.auth, &user, now)?,
        refresh_token: new,
        expires_in: state.auth.access_ttl.as_secs(),
        refresh_expires_at,
    }))
}

#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = OkResponse)))]
pub async fn logout(
    State(state): State<AppState>,
    Body(req): Body<RefreshRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    state
        .store
        .revoke_refresh_family(&sha256_hex(&req.refresh_token))
        .await
        .map_err(|e| ApiError::from_store("refresh token", e))?;
    Ok(Json(OkResponse { ok: true }))
}

#[utoipa::path(get, path = "/users/profile", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserJson), (status = 401)))]
pub async fn profile(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<UserJson>, ApiError> {
    let row = state
        .store
        .user(user.id)
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok(Json(row.into()))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/users/profile", get(profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        for r in [Role::Admin, Role::Operator, Role::Viewer] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(verify_password("correct horse".into(), Some(h.clone())).await);
        assert!(!verify_password("wrong".into(), Some(h)).await);
        assert!(!verify_password("anything".into(), None).await);
    }
}
