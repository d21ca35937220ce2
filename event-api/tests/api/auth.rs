//! Auth: login, refresh rotation with reuse detection, logout, profile, users administration.

use crate::support::{spawn_app, ADMIN, ADMIN_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn login(app: &crate::support::TestApp, user: &str, pw: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"username": user, "password": pw})),
    )
    .await
}

async fn refresh(app: &crate::support::TestApp, token: &Value) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refreshToken": token})),
    )
    .await
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let app = spawn_app().await;
    let (status, tokens) = login(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tokens["expiresIn"], 900);
    assert!(tokens["refreshExpiresAt"].is_string());
    assert_eq!(
        login(&app, ADMIN, "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, "nobody", "wrong-password").await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, second) = refresh(&app, &tokens["refreshToken"]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refreshToken"], tokens["refreshToken"]);
    let (status, profile) = app
        .call(
            Method::GET,
            "/users/profile",
            second["accessToken"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(profile["username"], ADMIN);
    assert_eq!(profile["role"], "ADMIN");
    assert!(profile.get("passwordHash").is_none());

    // Reusing the rotated token revokes the whole family, including the newest token.
    assert_eq!(
        refresh(&app, &tokens["refreshToken"]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &second["refreshToken"]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (_, third) = login(&app, ADMIN, ADMIN_PASSWORD).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/auth/logout",
            None,
            Some(json!({"refreshToken": third["refreshToken"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        refresh(&app, &third["refreshToken"]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &json!("garbage")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn admins_manage_users() {
    let app = spawn_app().await;
    let (status, user) = app
        .post(
            "/users",
            json!({"username": "olga", "password": "password-123", "role": "OPERATOR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["role"], "OPERATOR");
    assert!(user.get("password").is_none() && user.get("passwordHash").is_none());
    let (status, _) = app
        .post(
            "/users",
            json!({"username": "olga", "password": "password-123", "role": "VIEWER"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for (body, field) in [
        (
            json!({"username": "x", "password": "short", "role": "VIEWER"}),
            "password",
        ),
        (
            json!({"username": "x", "password": "password-123", "role": "ROOT"}),
            "role",
        ),
        (json!({"username": "x", "password": "password-123"}), "role"),
    ] {
        let (status, err) = app.post("/users", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["field"], field);
    }
    let id = user["id"].as_str().unwrap();
    let (status, updated) = app
        .call(
            Method::PUT,
            &format!("/users/{id}"),
            Some(&app.admin_token),
            Some(json!({"role": "VIEWER", "password": "new-password-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["role"], "VIEWER");
    assert_eq!(
        login(&app, "olga", "new-password-1").await.0,
        StatusCode::OK
    );
    let (_, list) = app.get("/users").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/users/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        login(&app, "olga", "new-password-1").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, me) = app.get("/users/profile").await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/users/{}", me["id"].as_str().unwrap()),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an admin cannot delete themselves"
    );
}

#[tokio::test]
async fn a_deleted_users_token_stops_working() {
    let app = spawn_app().await;
    let token = app.token_for("VIEWER").await;
    let (status, me) = app
        .call(Method::GET, "/users/profile", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.call(
        Method::DELETE,
        &format!("/users/{}", me["id"].as_str().unwrap()),
        Some(&app.admin_token),
        None,
    )
    .await;
    let (status, _) = app.call(Method::GET, "/cameras", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(Method::GET, "/cameras", Some("not.a.jwt"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = app
        .http
        .get(format!("{}/cameras", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}

/// Creates a MOTION event with `token`; returns the status.
async fn create_event(app: &crate::support::TestApp, token: &str, camera: &Value) -> StatusCode {
    app.call(
        Method::POST,
        "/events",
        Some(token),
        Some(json!({"cameraId": camera["id"], "type": "MOTION"})),
    )
    .await
    .0
}

/// A new OPERATOR who has made one accepted `POST /events`: its token and its profile.
async fn operator_who_made_an_event(
    app: &crate::support::TestApp,
    camera: &Value,
) -> (String, Value) {
    let token = app.token_for("OPERATOR").await;
    assert_eq!(create_event(app, &token, camera).await, StatusCode::CREATED);
    let (_, me) = app
        .call(Method::GET, "/users/profile", Some(&token), None)
        .await;
    (token, me)
}

#[tokio::test]
async fn a_demoted_users_token_loses_the_role_at_once() {
    let app = spawn_app().await;
    let camera = app.camera("10.9.0.1", 1).await;
    // The demotion below applies at once, not when the token expires.
    let (token, me) = operator_who_made_an_event(&app, &camera).await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/users/{}", me["id"].as_str().unwrap()),
            Some(&app.admin_token),
            Some(json!({"role": "VIEWER"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        create_event(&app, &token, &camera).await,
        StatusCode::FORBIDDEN
    );
    let (status, _) = app.call(Method::GET, "/cameras", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "still a viewer");
}

/// A change this instance did not make (another replica, or SQL) applies at the next request:
/// the role is read with every request.
#[tokio::test]
async fn a_role_changed_elsewhere_applies_at_the_next_request() {
    let app = spawn_app().await;
    let camera = app.camera("10.9.0.2", 1).await;
    let (token, me) = operator_who_made_an_event(&app, &camera).await;
    sqlx::query("UPDATE users SET role = 'VIEWER' WHERE id = $1::uuid")
        .bind(me["id"].as_str().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        create_event(&app, &token, &camera).await,
        StatusCode::FORBIDDEN
    );
}

/// This process's resident memory in MiB (the API under test runs in it).
fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// 300 wrong logins, 100 at a time, from one address under many usernames: the address is
/// refused with 429 and `Retry-After` once it has used up its failures, before any hashing;
/// hashes never pile up (memory stays bounded) and `/health` keeps answering.
#[tokio::test]
async fn a_login_flood_gets_429s_and_the_server_stays_up() {
    let app = spawn_app().await;
    let before = resident_mib();
    let mut codes = Vec::new();
    let mut slowest_health = std::time::Duration::ZERO;
    for wave in 0..3 {
        let logins = (0..100).map(|i| {
            let app = &app;
            async move {
                let name = format!("intruder-{wave}-{i}");
                let resp = app
                    .http
                    .post(format!("{}/auth/login", app.base))
                    .json(&json!({"username": name, "password": "guess-guess-guess"}))
                    .send()
                    .await
                    .unwrap();
                let retry_after = resp.headers().get("retry-after").cloned();
                (resp.status(), retry_after)
            }
        });
        let health = async {
            let started = std::time::Instant::now();
            let (status, _) = app.call(Method::GET, "/health", None, None).await;
            assert_eq!(status, StatusCode::OK);
            started.elapsed()
        };
        let (results, took) = tokio::join!(futures::future::join_all(logins), health);
        slowest_health = slowest_health.max(took);
        codes.extend(results);
    }
    let limited = codes
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let refused = codes
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(limited + refused, 300, "only 401s and 429s");
    assert!(
        refused <= 20,
        "{refused} hashed before the address was limited"
    );
    assert!(codes
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .all(|(_, r)| r
            .as_ref()
            .is_some_and(|v| v.to_str().unwrap().parse::<u64>().unwrap() > 0)));
    let after = resident_mib();
    eprintln!("resident memory: {before} MiB before the flood, {after} MiB after");
    assert!(after < 300, "resident memory {after} MiB");
    assert!(
        slowest_health < std::time::Duration::from_secs(1),
        "{slowest_health:?}"
    );
    // The limit is per username and address: the admin elsewhere still logs in.
    let (status, _) = login(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "same address: still limited"
    );
}

/// A username is limited whatever address it is tried from; a success clears it.
#[tokio::test]
async fn repeated_wrong_passwords_for_one_user_get_429() {
    let app = crate::support::spawn_app_with(vec![
        ("LOGIN_MAX_FAILURES".into(), "3".into()),
        ("LOGIN_WINDOW_SEC".into(), "600".into()),
    ])
    .await;
    for _ in 0..3 {
        assert_eq!(
            login(&app, ADMIN, "wrong-password").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, body) = login(&app, ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.to_string().contains("retry"), "{body}");
}

/// A token signed with the right key but not issued for this API (no `iss`/`aud`, or others)
/// is refused.
#[tokio::test]
async fn tokens_without_our_issuer_and_audience_are_refused() {
    let app = spawn_app().await;
    let (_, me) = app
        .call(Method::GET, "/users/profile", Some(&app.admin_token), None)
        .await;
    let key = jsonwebtoken::EncodingKey::from_secret(app.config.jwt_secret.expose().as_bytes());
    let now = chrono::Utc::now().timestamp();
    for claims in [
        json!({"sub": me["id"], "role": "ADMIN", "iat": now, "exp": now + 600}),
        json!({"sub": me["id"], "role": "ADMIN", "iss": "someone-else", "aud": "camrec-api", "iat": now, "exp": now + 600}),
        json!({"sub": me["id"], "role": "ADMIN", "iss": "camrec-event-api", "aud": "another-api", "iat": now, "exp": now + 600}),
    ] {
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let (status, _) = app.call(Method::GET, "/cameras", Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}");
    }
    let (status, _) = app
        .call(Method::GET, "/cameras", Some(&app.admin_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
