//! `[capture]` in the config: what `wanda-ipfs capture` does when its flags do not say.
//!
//! Plain data with serde defaults (kept in step with `config/default.toml`), a
//! [`CaptureConfig::validate`] whose messages name the key, and the conversions into what the
//! sources and [`run_session`](super::run_session) take. The `check_*` functions hold each rule
//! once, so the command line can give the same reasons under its flags' names.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Mode, RpicamOptions, V4l2Options};

/// `[capture] source`: where stills come from.
// Also `capture --source`'s values (clap), so config and flag name them the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Pi camera (WANDA's rig: the HQ camera) through `rpicam-still` / `libcamera-still`.
    #[default]
    Rpicam,
    /// A USB webcam, or any V4L2 capture device sending MJPEG, at `device`.
    #[value(name = "v4l2")]
    V4l2,
    /// Deterministic JPEG-shaped bytes, no hardware.
    Test,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Rpicam => "rpicam",
            SourceKind::V4l2 => "v4l2",
            SourceKind::Test => "test",
        }
    }
}

/// `[capture] mode`: when stills are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModeKind {
    /// `count` stills, one every `interval_secs`.
    #[default]
    Rapid,
    /// `count` stills spread evenly over `hours`.
    Timed,
}

/// Longest interval, session span or frame timeout, in seconds (about 115 days): far beyond
/// any night, and well inside what a `Duration` holds.
pub const MAX_SECS: f64 = 1e7;

/// `[capture]` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// `rpicam` (the default: WANDA's rig is a Pi HQ camera), `v4l2` or `test`.
    #[serde(default)]
    pub source: SourceKind,
    /// `rapid` (the default) or `timed`.
    #[serde(default)]
    pub mode: ModeKind,
    /// Rapid mode: seconds between stills, 0 or more. Default 0.5 (WANDA's rapid mode).
    #[serde(default = "default_interval_secs")]
    pub interval_secs: f64,
    /// Stills per session, at least 1. Default 10.
    #[serde(default = "default_count")]
    pub count: u32,
    /// Timed mode: hours the session spans, more than 0. Default 1.
    #[serde(default = "default_hours")]
    pub hours: f64,
    /// rpicam and v4l2: image width in pixels. Unset: the camera's default (rpicam-still's own;
    /// v4l2 1920).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// rpicam and v4l2: image height in pixels. Unset: the camera's default (v4l2 1080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// rpicam: exposure in microseconds. Unset: automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutter_us: Option<u64>,
    /// rpicam: analogue gain, more than 0. Unset: automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain: Option<f64>,
    /// rpicam: more arguments for `rpicam-still`, passed as given. Default none.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// v4l2: the device node. Default `/dev/video0`.
    #[serde(default = "default_device")]
    pub device: PathBuf,
    /// v4l2: frames thrown away before each still while auto-exposure settles. Default 5.
    #[serde(default = "default_warmup_frames")]
    pub warmup_frames: u32,
    /// Seconds one frame (v4l2) or one still (rpicam) may take before it fails. Unset: v4l2
    /// 10 s; rpicam-still 30 s plus twice the exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

fn default_interval_secs() -> f64 {
    0.5
}
fn default_count() -> u32 {
    10
}
fn default_hours() -> f64 {
    1.0
}
fn default_device() -> PathBuf {
    V4l2Options::default().device
}
fn default_warmup_frames() -> u32 {
    V4l2Options::default().warmup_frames
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            source: SourceKind::default(),
            mode: ModeKind::default(),
            interval_secs: default_interval_secs(),
            count: default_count(),
            hours: default_hours(),
            width: None,
            height: None,
            shutter_us: None,
            gain: None,
            extra_args: Vec::new(),
            device: default_device(),
            warmup_frames: default_warmup_frames(),
            timeout_secs: None,
        }
    }
}

/// Rapid mode's interval: finite, 0 or more. The message leaves out the setting's name, which
/// the caller puts in front (a config key or a flag).
pub fn check_interval_secs(s: f64) -> Result<(), String> {
    if s.is_finite() && (0.0..=MAX_SECS).contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "must be a number of seconds from 0 to {MAX_SECS}, got {s}"
        ))
    }
}

/// Timed mode's span: more than 0 hours.
pub fn check_hours(h: f64) -> Result<(), String> {
    if h.is_finite() && h > 0.0 && h * 3600.0 <= MAX_SECS {
        Ok(())
    } else {
        Err(format!(
            "must be a number of hours more than 0 and at most {:.0}, got {h}",
            (MAX_SECS / 3600.0).floor()
        ))
    }
}

/// Stills per session: at least one.
pub fn check_count(n: u32) -> Result<(), String> {
    if n >= 1 {
        Ok(())
    } else {
        Err("must be at least 1 (a session needs a still)".into())
    }
}

/// A width or height: at least one pixel.
pub fn check_pixels(n: u32) -> Result<(), String> {
    if n >= 1 {
        Ok(())
    } else {
        Err("must be at least 1 pixel".into())
    }
}

/// Analogue gain: more than 0.
pub fn check_gain(g: f64) -> Result<(), String> {
    if g.is_finite() && g > 0.0 {
        Ok(())
    } else {
        Err(format!("must be a number more than 0, got {g}"))
    }
}

/// A timeout: more than 0 seconds.
pub fn check_timeout_secs(s: f64) -> Result<(), String> {
    if s.is_finite() && s > 0.0 && s <= MAX_SECS {
        Ok(())
    } else {
        Err(format!(
            "must be a number of seconds more than 0 and at most {MAX_SECS}, got {s}"
        ))
    }
}

impl CaptureConfig {
    /// Keys with no default value, so `config/default.toml` can only show them commented out;
    /// `WANDA_CAPTURE_<KEY>` must still reach them.
    pub const UNSET_KEYS: [&'static str; 5] =
        ["width", "height", "shutter_us", "gain", "timeout_secs"];

    /// Checks every setting; the message names the key and says what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let key = |k: &str, r: Result<(), String>| r.map_err(|m| format!("capture: {k} {m}"));
        key("interval_secs", check_interval_secs(self.interval_secs))?;
        key("count", check_count(self.count))?;
        key("hours", check_hours(self.hours))?;
        if let Some(w) = self.width {
            key("width", check_pixels(w))?;
        }
        if let Some(h) = self.height {
            key("height", check_pixels(h))?;
        }
        if let Some(g) = self.gain {
            key("gain", check_gain(g))?;
        }
        if let Some(t) = self.timeout_secs {
            key("timeout_secs", check_timeout_secs(t))?;
        }
        if self.device.as_os_str().is_empty() {
            return Err("capture: device must not be empty (e.g. /dev/video0)".into());
        }
        Ok(())
    }

    /// The schedule these settings describe.
    pub fn schedule(&self) -> Result<Mode, String> {
        self.validate()?;
        Ok(match self.mode {
            ModeKind::Rapid => Mode::Rapid {
                interval: Duration::from_secs_f64(self.interval_secs),
                count: self.count,
            },
            ModeKind::Timed => Mode::Timed {
                count: self.count,
                over: Duration::from_secs_f64(self.hours * 3600.0),
            },
        })
    }

    /// What to pass `rpicam-still`.
    pub fn rpicam_options(&self) -> RpicamOptions {
        RpicamOptions {
            width: self.width,
            height: self.height,
            shutter_us: self.shutter_us,
            gain: self.gain,
            extra: self.extra_args.clone(),
            timeout: self.timeout_secs.map(Duration::from_secs_f64),
        }
    }

    /// What to open the webcam with: the size needs both width and height, or neither.
    pub fn v4l2_options(&self) -> Result<V4l2Options, String> {
        self.validate()?;
        let d = V4l2Options::default();
        let (width, height) = match (self.width, self.height) {
            (Some(w), Some(h)) => (w, h),
            (None, None) => (d.width, d.height),
            _ => {
                return Err(format!(
                    "capture: the v4l2 source needs both width and height, or neither (then {}x{})",
                    d.width, d.height
                ))
            }
        };
        Ok(V4l2Options {
            device: self.device.clone(),
            width,
            height,
            warmup_frames: self.warmup_frames,
            timeout: self.timeout_secs.map_or(d.timeout, Duration::from_secs_f64),
            buffers: d.buffers,
        })
    }

    /// Settings that are set but that `self.source` does not use (to warn about).
    pub fn unused_by_source(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let rpicam_only = [
            ("shutter_us", self.shutter_us.is_some()),
            ("gain", self.gain.is_some()),
            ("extra_args", !self.extra_args.is_empty()),
        ];
        match self.source {
            SourceKind::Rpicam => {}
            SourceKind::V4l2 => out.extend(rpicam_only.iter().filter(|(_, s)| *s).map(|(k, _)| *k)),
            SourceKind::Test => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_TOML};

    fn parse(text: &str) -> Result<CaptureConfig, String> {
        Config::parse(text, "test", |_| None)
            .map(|c| c.capture)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_rapid_session_on_the_pi_camera() {
        let c = Config::parse(DEFAULT_TOML, "default", |_| None)
            .unwrap()
            .capture;
        assert_eq!(c, CaptureConfig::default());
        assert_eq!(c.source, SourceKind::Rpicam);
        assert_eq!(
            c.schedule().unwrap(),
            Mode::Rapid {
                interval: Duration::from_millis(500),
                count: 10
            }
        );
        assert_eq!(c.rpicam_options(), RpicamOptions::default());
        assert_eq!(c.v4l2_options().unwrap(), V4l2Options::default());
        assert!(c.unused_by_source().is_empty());
    }

    #[test]
    fn a_capture_section_is_read_and_converted() {
        let c = parse(
            r#"
[capture]
source = "v4l2"
mode = "timed"
interval_secs = 2
count = 30
hours = 2.5
width = 1280
height = 720
shutter_us = 20000
gain = 8
extra_args = ["--awb", "daylight"]
device = "/dev/video2"
warmup_frames = 0
timeout_secs = 3
"#,
        )
        .unwrap();
        assert_eq!((c.source, c.mode), (SourceKind::V4l2, ModeKind::Timed));
        assert_eq!(
            c.schedule().unwrap(),
            Mode::Timed {
                count: 30,
                over: Duration::from_secs(9000)
            }
        );
        assert_eq!(
            c.v4l2_options().unwrap(),
            V4l2Options {
                device: "/dev/video2".into(),
                width: 1280,
                height: 720,
                warmup_frames: 0,
                timeout: Duration::from_secs(3),
                buffers: V4l2Options::default().buffers,
            }
        );
        assert_eq!(
            c.rpicam_options(),
            RpicamOptions {
                width: Some(1280),
                height: Some(720),
                shutter_us: Some(20_000),
                gain: Some(8.0),
                extra: vec!["--awb".into(), "daylight".into()],
                timeout: Some(Duration::from_secs(3)),
            }
        );
        assert_eq!(c.unused_by_source(), ["shutter_us", "gain", "extra_args"]);
        let c = CaptureConfig {
            source: SourceKind::Rpicam,
            ..c
        };
        assert!(
            c.unused_by_source().is_empty(),
            "rpicam takes timeout_secs too"
        );
        let c = parse("[capture]\nsource = \"test\"\ninterval_secs = 0\n").unwrap();
        assert_eq!(c.source, SourceKind::Test);
        assert_eq!(
            c.schedule().unwrap(),
            Mode::Rapid {
                interval: Duration::ZERO,
                count: 10
            }
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_and_the_rule() {
        for (text, needle) in [
            ("source = \"webcam\"", "unknown variant `webcam`"),
            ("source = \"webcam\"", "`rpicam`, `v4l2`, `test`"),
            ("mode = \"slow\"", "expected `rapid` or `timed`"),
            ("mode = \"slow\"", "capture.mode"),
            ("interval_secs = -0.5", "capture: interval_secs must be"),
            ("interval_secs = nan", "interval_secs must be"),
            ("interval_secs = inf", "interval_secs must be"),
            (
                "hours = 0",
                "capture: hours must be a number of hours more than 0",
            ),
            ("hours = -1.0", "hours must be"),
            ("hours = 1e9", "at most 2777"),
            ("count = 0", "capture: count must be at least 1"),
            ("count = -3", "count"),
            ("width = 0", "capture: width must be at least 1"),
            ("gain = 0.0", "capture: gain must be"),
            ("timeout_secs = 0", "capture: timeout_secs must be"),
            ("device = \"\"", "capture: device must not be empty"),
            ("shuter_us = 10", "unknown field `shuter_us`"),
        ] {
            let e = parse(&format!("[capture]\n{text}\n")).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let one_side = CaptureConfig {
            width: Some(640),
            ..CaptureConfig::default()
        };
        let e = one_side.v4l2_options().unwrap_err();
        assert!(e.contains("both width and height"), "{e}");
        assert!(
            one_side.rpicam_options().width == Some(640),
            "rpicam-still takes one side alone"
        );
    }

    #[test]
    fn every_key_can_be_set_from_the_environment() {
        let set = CaptureConfig {
            source: SourceKind::Test,
            mode: ModeKind::Timed,
            interval_secs: 1.25,
            count: 3,
            hours: 0.5,
            width: Some(800),
            height: Some(600),
            shutter_us: Some(1000),
            gain: Some(2.5),
            extra_args: vec!["--denoise".into(), "off".into()],
            device: "/dev/video4".into(),
            warmup_frames: 1,
            timeout_secs: Some(4.5),
        };
        let table = toml::Table::try_from(&set).unwrap();
        assert_eq!(table.len(), 13, "every key is set: {table:?}");
        let env = |k: &str| {
            let key = k.strip_prefix("WANDA_CAPTURE_")?.to_lowercase();
            let v = table.get(&key)?;
            // As a shell would hold them: strings bare, other values as TOML.
            Some(match v {
                toml::Value::String(s) => s.clone(),
                v => v.to_string(),
            })
        };
        let c = Config::parse(DEFAULT_TOML, "test", env).unwrap().capture;
        assert_eq!(c, set);
        // Environment over file; a whole number is fine for seconds.
        let env = |k: &str| match k {
            "WANDA_CAPTURE_COUNT" => Some("4".to_string()),
            "WANDA_CAPTURE_INTERVAL_SECS" => Some("2".to_string()),
            "WANDA_CAPTURE_SOURCE" => Some("v4l2".to_string()),
            _ => None,
        };
        let c = Config::parse("[capture]\ncount = 3\nsource = \"test\"\n", "test", env)
            .unwrap()
            .capture;
        assert_eq!(
            (c.count, c.interval_secs, c.source),
            (4, 2.0, SourceKind::V4l2)
        );
        // A bad value from the environment is refused like one from the file.
        let env = |k: &str| (k == "WANDA_CAPTURE_HOURS").then(|| "0".to_string());
        let e = Config::parse("", "test", env).unwrap_err().to_string();
        assert!(e.contains("capture: hours"), "{e}");
    }
}
