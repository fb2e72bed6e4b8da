//! Query strings as Kubo's RPC reads them (go-ipfs-cmds): `arg=` repeated for positional
//! arguments, every other key an option whose value is parsed the Go way (`strconv.ParseBool`,
//! `ParseInt`, `time.ParseDuration`), so a client written for Kubo is understood unchanged:
//! Python's `ipfshttpclient` sends `pin=True`, the JS client `timeout=5000ms`.
//!
//! Parsing is pure and answers Kubo's messages; the handlers turn a failure into a 400.

use std::time::Duration;

use axum::http::StatusCode;

use super::rpc::ApiError;

/// Longest `timeout=` honoured: a request still has to end some day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A parsed query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    /// The `arg` values, in order.
    pub args: Vec<String>,
    /// Every other key with its values, in order of first appearance.
    opts: Vec<(String, Vec<String>)>,
}

impl Params {
    /// Decodes `a=1&b=x%20y` (`+` is a space, as in HTML forms and Go's `url.ParseQuery`).
    pub fn parse(query: Option<&str>) -> Result<Params, String> {
        let mut p = Params::default();
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = super::add::query_unescape(k)?;
            let v = super::add::query_unescape(v)?;
            if k == "arg" {
                p.args.push(v);
            } else if let Some((_, vs)) = p.opts.iter_mut().find(|(name, _)| *name == k) {
                vs.push(v);
            } else {
                p.opts.push((k, vec![v]));
            }
        }
        Ok(p)
    }

    /// The single value of option `name`, if given; given twice is an error (as in Kubo).
    pub fn string(&self, name: &str) -> Result<Option<&str>, String> {
        match self.opts.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, vs)) if vs.len() == 1 => Ok(Some(vs[0].as_str())),
            Some((_, vs)) => Err(format!(
                "expected key {name} to have only a single value, received {vs:?}"
            )),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        self.string(name)?
            .map(|v| parse_go_bool(v).ok_or_else(|| convert_error(v, "bool", name)))
            .transpose()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        self.string(name)?
            .map(|v| parse_go_int(v).ok_or_else(|| convert_error(v, "int", name)))
            .transpose()
    }

    /// Kubo's global `timeout` option, capped at [`MAX_TIMEOUT`].
    pub fn timeout(&self) -> Result<Option<Duration>, String> {
        self.string("timeout")?
            .map(|v| {
                parse_go_duration(v)
                    .map(|d| d.min(MAX_TIMEOUT))
                    .map_err(|e| format!("invalid timeout {v:?}: {e}"))
            })
            .transpose()
    }

    /// The first `arg`, required: Kubo's message names the argument.
    pub fn required_arg(&self, name: &str) -> Result<&str, String> {
        self.args
            .first()
            .map(String::as_str)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("argument {name:?} is required"))
    }
}

fn convert_error(v: &str, ty: &str, name: &str) -> String {
    format!("could not convert {v:?} to type {ty:?} (for option \"-{name}\")")
}

/// Parses the query of a request, or answers 400.
pub(super) fn params(query: Option<&str>) -> Result<Params, ApiError> {
    Params::parse(query).map_err(bad_request)
}

/// A client's mistake, as Kubo answers it: 400 with the message.
pub(super) fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Go's `strconv.ParseBool`, plus go-ipfs-cmds' rule that a bare `?flag` means true.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, or `0x`/`0o`/`0b`/leading-`0` prefixes, `_`
/// separators only with a prefix.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.replace('_', ""))
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.replace('_', ""))
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.replace('_', ""))
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].replace('_', ""))
    } else {
        if lower.contains('_') {
            return None;
        }
        (10, lower)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Go's `time.ParseDuration` for the non-negative durations a timeout can be: `300ms`, `1.5h`,
/// `2h45m`, `0`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err("a timeout cannot be negative".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err("expected a number before each unit".into());
        }
        let value: f64 = num.parse().map_err(|_| format!("bad number {num:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit (e.g. 30s, 500ms, 2m)".into()),
            u => return Err(format!("unknown unit {u:?} (use ns, us, ms, s, m or h)")),
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration out of range".into());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_repeat_and_options_do_not() {
        let p = Params::parse(Some("arg=a&arg=%2Fipfs%2Fb&type=all&x=1&x=2&stream")).unwrap();
        assert_eq!(p.args, vec!["a", "/ipfs/b"]);
        assert_eq!(p.string("type").unwrap(), Some("all"));
        assert_eq!(p.string("missing").unwrap(), None);
        assert!(p.string("x").unwrap_err().contains("only a single value"));
        assert_eq!(p.bool("stream").unwrap(), Some(true));
        assert_eq!(p.required_arg("cid").unwrap(), "a");
        let empty = Params::parse(None).unwrap();
        assert_eq!(
            empty.required_arg("cid").unwrap_err(),
            "argument \"cid\" is required"
        );
        assert_eq!(
            Params::parse(Some("arg="))
                .unwrap()
                .required_arg("root")
                .unwrap_err(),
            "argument \"root\" is required"
        );
        assert!(Params::parse(Some("arg=%zz")).is_err());
        assert_eq!(
            Params::parse(Some("arg=a+b")).unwrap().args,
            vec!["a b".to_string()]
        );
    }

    #[test]
    fn bools_parse_as_go_does() {
        for t in ["", "1", "t", "T", "true", "True", "TRUE"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "False", "FALSE"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["yes", "tRUE", "2", " true"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
        let p = Params::parse(Some("pin=maybe")).unwrap();
        assert_eq!(
            p.bool("pin").unwrap_err(),
            "could not convert \"maybe\" to type \"bool\" (for option \"-pin\")"
        );
    }

    #[test]
    fn ints_parse_as_go_does() {
        assert_eq!(parse_go_int("1"), Some(1));
        assert_eq!(parse_go_int("-7"), Some(-7));
        assert_eq!(parse_go_int("0x10"), Some(16));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0b1_0"), Some(2));
        assert_eq!(parse_go_int("0"), Some(0));
        for bad in ["", "1_0", "v1", "0x", "--1", "1.0"] {
            assert_eq!(parse_go_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_parse_as_go_does() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration("300ms").unwrap(), ms(300));
        assert_eq!(parse_go_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(
            parse_go_duration("2h45m").unwrap(),
            ms((2 * 3600 + 45 * 60) * 1000)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(
            parse_go_duration("10us").unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(parse_go_duration("5µs").unwrap(), Duration::from_micros(5));
        assert_eq!(parse_go_duration("+2s").unwrap(), ms(2000));
        for bad in ["", "10", "-1s", "1d", "s", "1..2s", ".s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
        let p = Params::parse(Some("timeout=5000ms")).unwrap();
        assert_eq!(p.timeout().unwrap(), Some(ms(5000)));
        let p = Params::parse(Some("timeout=100000h")).unwrap();
        assert_eq!(p.timeout().unwrap(), Some(MAX_TIMEOUT));
        assert!(Params::parse(Some("timeout=soon"))
            .unwrap()
            .timeout()
            .is_err());
    }
}
