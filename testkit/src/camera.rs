//! A fake IP camera for tests: `fake_camera.py` (GStreamer RTSP server) playing a live test
//! pattern over RTSP/TCP, behind a username and password, in the codec profiles real cameras use.

use crate::process::ServerProcess;
use crate::{free_port, wait_until, workspace_root};
use camrec_shared::rtsp::RtspUrl;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    /// G.711 A-law, as many Dahua and Hikvision cameras send.
    Pcma,
    /// G.711 µ-law.
    Pcmu,
    None,
}

/// What the camera serves.
#[derive(Clone, Copy, Debug)]
pub struct CameraProfile {
    pub video: VideoCodec,
    pub audio: AudioCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// One encoder for every client, as a real camera (`--shared`). Off by default: the shared
    /// GStreamer media sometimes went on resetting every new connection after a client was
    /// SIGKILLed, which the lab's fault runs then counted as unreachable cameras.
    pub shared: bool,
}

impl Default for CameraProfile {
    /// H.264 + AAC, 640x360 at 25 fps (cheap enough for many cameras on two cores).
    fn default() -> Self {
        Self {
            video: VideoCodec::H264,
            audio: AudioCodec::Aac,
            width: 640,
            height: 360,
            fps: 25,
            shared: false,
        }
    }
}

impl CameraProfile {
    /// The same profile with one encoder shared by every client (many clients at once cost
    /// the camera no more CPU than one).
    pub fn shared(self) -> Self {
        Self {
            shared: true,
            ..self
        }
    }
    pub fn h264_g711() -> Self {
        Self {
            audio: AudioCodec::Pcma,
            ..Self::default()
        }
    }
    pub fn h264_silent() -> Self {
        Self {
            audio: AudioCodec::None,
            ..Self::default()
        }
    }
    pub fn h265_aac() -> Self {
        Self {
            video: VideoCodec::H265,
            ..Self::default()
        }
    }
}

pub struct FakeCamera {
    pub profile: CameraProfile,
    pub port: u16,
    pub username: String,
    pub password: String,
    process: Option<ServerProcess>,
    sessions: Arc<SessionCounter>,
}

/// The RTSP connections a camera has served, as it announced them.
#[derive(Debug, Default)]
struct SessionCounter {
    open: AtomicU64,
    peak: AtomicU64,
    total: AtomicU64,
}

/// What [`FakeCamera::sessions`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sessions {
    /// Connections open now.
    pub open: u64,
    /// The most connections open at once since the start (or [`FakeCamera::reset_peak`]).
    pub peak: u64,
    /// Connections ever accepted.
    pub total: u64,
}

impl FakeCamera {
    /// Starts a camera on a free port with a random password and waits until it serves.
    pub async fn start(profile: CameraProfile) -> anyhow::Result<Self> {
        Self::start_on(profile, free_port()).await
    }

    /// Starts a camera on `port`.
    pub async fn start_on(profile: CameraProfile, port: u16) -> anyhow::Result<Self> {
        let mut cam = Self {
            profile,
            port,
            username: "admin".into(),
            password: format!("pw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            process: None,
            sessions: Arc::default(),
        };
        cam.spawn().await?;
        Ok(cam)
    }

    /// `rtsp://admin:<password>@127.0.0.1:<port>/cam`.
    pub fn url(&self) -> RtspUrl {
        RtspUrl::parse(&format!(
            "rtsp://{}:{}@127.0.0.1:{}/cam",
            self.username, self.password, self.port
        ))
        .expect("a valid camera URL")
    }

    /// Kills the camera (as if it lost power).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Brings the camera back on the same port with the same credential.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The RTSP connections this camera serves and has served (ffprobe's count too).
    pub fn sessions(&self) -> Sessions {
        Sessions {
            open: self.sessions.open.load(Ordering::SeqCst),
            peak: self.sessions.peak.load(Ordering::SeqCst),
            total: self.sessions.total.load(Ordering::SeqCst),
        }
    }

    /// Starts counting the peak again from the connections open now.
    pub fn reset_peak(&self) {
        let open = self.sessions.open.load(Ordering::SeqCst);
        self.sessions.peak.store(open, Ordering::SeqCst);
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let p = &self.profile;
        let mut cmd = Command::new(
            std::env::var("FAKE_CAMERA_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into()),
        );
        cmd.arg(workspace_root().join("testkit/fake_camera.py"))
            .args(["--port", &self.port.to_string(), "--path", "/cam"])
            .args(["--user", &self.username, "--password", &self.password])
            .args([
                "--video",
                match p.video {
                    VideoCodec::H264 => "h264",
                    VideoCodec::H265 => "h265",
                },
            ])
            .args([
                "--audio",
                match p.audio {
                    AudioCodec::Aac => "aac",
                    AudioCodec::Pcma => "pcma",
                    AudioCodec::Pcmu => "pcmu",
                    AudioCodec::None => "none",
                },
            ])
            .args([
                "--width",
                &p.width.to_string(),
                "--height",
                &p.height.to_string(),
            ])
            .args(["--fps", &p.fps.to_string()])
            .args(p.shared.then_some("--shared"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut process = ServerProcess::spawn("fake camera", cmd)?;
        let stdout = process
            .child_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| anyhow::anyhow!("fake camera has no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let sessions = self.sessions.clone();
        sessions.open.store(0, Ordering::SeqCst);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.as_str() {
                    l if l.starts_with("READY") => {
                        let _ = tx.send(());
                    }
                    "CLIENT OPEN" => {
                        let open = sessions.open.fetch_add(1, Ordering::SeqCst) + 1;
                        sessions.peak.fetch_max(open, Ordering::SeqCst);
                        sessions.total.fetch_add(1, Ordering::SeqCst);
                    }
                    "CLIENT CLOSED" => {
                        let _ =
                            sessions
                                .open
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    Some(n.saturating_sub(1))
                                });
                    }
                    _ => {}
                }
            }
        });
        self.process = Some(process);
        wait_until(Duration::from_secs(20), "the fake camera", || {
            let ready = rx.try_recv().is_ok();
            async move { ready.then_some(()) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_rtsp_behind_its_credential() {
        let cam = FakeCamera::start(CameraProfile::h264_g711()).await.unwrap();
        let probe = |url: String| async move {
            tokio::process::Command::new("ffprobe")
                .args(["-v", "error", "-rtsp_transport", "tcp", "-show_entries"])
                .args(["stream=codec_name", "-of", "csv=p=0", &url])
                .output()
                .await
                .unwrap()
        };
        let out = probe(cam.url().expose().to_owned()).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("h264") && text.contains("pcm_alaw"), "{text}");
        wait_until(
            Duration::from_secs(5),
            "the session counted and closed",
            || async {
                let s = cam.sessions();
                (s.total == 1 && s.peak == 1 && s.open == 0).then_some(())
            },
        )
        .await
        .unwrap();
        let wrong = cam.url().with_credentials(Some("admin"), Some("nope"));
        assert!(!probe(wrong.expose().to_owned()).await.status.success());
    }
}
