//! The `users` and `refresh_tokens` tables. Passwords arrive here already hashed (argon2) and
//! refresh tokens as SHA-256 hashes; nothing in this module sees a secret in clear.

use super::{on_unique, Store, StoreError};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

const COLUMNS: &str = "id, username, password_hash, role, created_at, updated_at";

/// One user as stored.
#[derive(Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid: it is revoked and `new_hash` replaces it in the same family.
    Rotated { user_id: Uuid },
    /// Unknown or expired.
    Invalid,
    /// A revoked token was reused: the whole family is now revoked.
    Reused,
}

/// id, user_id, family_id, expires_at, revoked_at of a refresh token.
type TokenRow = (Uuid, Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>);

const DUPLICATE: &str = "a user with this username already exists";
const UNIQUE: &str = "users_username_key";

impl Store {
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<UserRow, StoreError> {
        sqlx::query_as::<_, UserRow>(&format!(
            "INSERT INTO users (id, username, password_hash, role) VALUES ($1, $2, $3, $4) \
             RETURNING {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| on_unique(e, UNIQUE, DUPLICATE))
    }

    /// Creates the first admin when no user exists; returns whether it did.
    pub async fn ensure_first_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role) \
             SELECT $1, $2, $3, 'ADMIN' WHERE NOT EXISTS (SELECT 1 FROM users) \
             ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(username)
        .bind(password_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn user(&self, id: Uuid) -> Result<UserRow, StoreError> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<UserRow, StoreError> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(&format!(
            "SELECT {COLUMNS} FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Changes what is `Some`; a new password revokes the user's refresh tokens.
    pub async fn update_user(
        &self,
        id: Uuid,
        username: Option<&str>,
        password_hash: Option<&str>,
        role: Option<&str>,
    ) -> Result<UserRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, UserRow>(&format!(
            "UPDATE users SET username = COALESCE($2, username), \
             password_hash = COALESCE($3, password_hash), role = COALESCE($4, role), \
             updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| on_unique(e, UNIQUE, DUPLICATE))?
        .ok_or(StoreError::NotFound)?;
        if password_hash.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = now() \
                 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    pub async fn delete_user(&self, id: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Stores a new refresh token (a new family at login).
    pub async fn insert_refresh_token(
        &self,
        user_id: Uuid,
        token_hash: &str,
        family_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(token_hash)
        .bind(family_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rotates the token whose hash is `old_hash`: revokes it and stores `new_hash` in the same
    /// family, in one transaction. Reusing a revoked token revokes the family.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
        new_expires_at: DateTime<Utc>,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, user_id, family_id, expires_at, revoked_at FROM refresh_tokens \
                 WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, user_id, family_id, expires_at, revoked_at)) = row else {
            return Ok(Rotation::Invalid);
        };
        if revoked_at.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) \
                 WHERE family_id = $1",
            )
            .bind(family_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused);
        }
        if expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        let new_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_id)
        .bind(user_id)
        .bind(new_hash)
        .bind(family_id)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE id = $1")
            .bind(id)
            .bind(new_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id })
    }

    /// Revokes the family of the token whose hash is `hash` (logout); unknown tokens are ignored.
    pub async fn revoke_refresh_family(&self, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) \
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
