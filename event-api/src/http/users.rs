//! `/users`: user administration (ADMIN only). There is no public registration; the first admin
//! comes from `ADMIN_USERNAME`/`ADMIN_PASSWORD`.

use super::auth::{hash_password, Admin, Role, UserJson};
use super::error::ApiError;
use super::extract::{Body, PathId, RequestBody};
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;

const MIN_PASSWORD: usize = 8;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    password: String,
    role: Role,
}

impl RequestBody for CreateUser {
    const FIELDS: &'static [&'static str] = &["username", "password", "role"];
    const REQUIRED: &'static [&'static str] = &["username", "password", "role"];
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    username: Option<String>,
    password: Option<String>,
    role: Option<Role>,
}

impl RequestBody for UpdateUser {
    const FIELDS: &'static [&'static str] = &["username", "password", "role"];
    const REQUIRED: &'static [&'static str] = &[];
}

fn check_username(u: &str) -> Result<String, ApiError> {
    let u = u.trim();
    if u.is_empty() || u.len() > 64 {
        return Err(ApiError::invalid("username", "must be 1 to 64 characters"));
    }
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::invalid(
            "username",
            "must not contain whitespace or control characters",
        ));
    }
    Ok(u.to_owned())
}

fn check_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < MIN_PASSWORD || p.len() > 256 {
        return Err(ApiError::invalid(
            "password",
            format!("must be {MIN_PASSWORD} to 256 characters"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = UserJson), (status = 400), (status = 403), (status = 409)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Body(req): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserJson>), ApiError> {
    let username = check_username(&req.username)?;
    check_password(&req.password)?;
    let hash = hash_password(req.password).await?;
    let row = state
        .store
        .create_user(&username, &hash, req.role.as_str())
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = [UserJson]), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<UserJson>>, ApiError> {
    let rows = state
        .store
        .list_users()
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

#[utoipa::path(put, path = "/users/{id}", tag = "users", security(("bearer" = [])), request_body = UpdateUser,
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserJson), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn update(
    State(state): State<AppState>,
    Admin(user): Admin,
    PathId(id): PathId,
    Body(req): Body<UpdateUser>,
) -> Result<Json<UserJson>, ApiError> {
    let username = req.username.as_deref().map(check_username).transpose()?;
    let hash = match req.password {
        Some(p) => {
            check_password(&p)?;
            Some(hash_password(p).await?)
        }
        None => None,
    };
    if id == user.id && req.role.is_some_and(|r| r != Role::Admin) {
        return Err(ApiError::Conflict("an admin cannot demote themselves"));
    }
    let row = state
        .store
        .update_user(
            id,
            username.as_deref(),
            hash.as_deref(),
            req.role.map(Role::as_str),
        )
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok(Json(row.into()))
}

#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(user): Admin,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if id == user.id {
        return Err(ApiError::Conflict("an admin cannot delete themselves"));
    }
    state
        .store
        .delete_user(id)
        .await
        .map_err(|e| ApiError::from_store("user", e))?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}", put(update).delete(delete))
}
