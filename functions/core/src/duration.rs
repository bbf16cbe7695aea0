//! Durations as settings write them (`30s`, `500ms`, `5m`, `30d`) and as
//! a person reads them (`30 s`, `5 min`): one format for every flag,
//! environment variable and message.

/// `30s`, `500ms`, `5m`, `1h`, or seconds: a wait from 100 ms to 7 days.
pub fn parse_wait(what: &str, text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{what} {text:?}: the unit must be ms, s, m or h (for example 30s or 5m)")),
    };
    let seconds = number
        .parse::<f64>()
        .map_err(|_| format!("{what} {text:?}: expected a number and a unit, for example 30s or 5m"))?
        * scale;
    if !(0.1..=7.0 * 24.0 * 3600.0).contains(&seconds) {
        return Err(format!("{what} {text:?}: must be from 100ms to 7 days"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// A retention as written in settings: a whole number and a unit (`d`,
/// `h` or `m`), from one minute to ten years: `30d`, `12h`.
pub fn parse_retention(what: &str, text: &str) -> Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" | "min" => 60,
        _ => return Err(format!("{what} {text:?}: expected a whole number and a unit d, h or m (for example 30d)")),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (60..=10 * 366 * 86_400).contains(s))
        .ok_or_else(|| format!("{what} {text:?}: must be from 1 minute to 10 years (for example 30d)"))?;
    Ok(std::time::Duration::from_secs(seconds))
}

/// "30 s", "1.5 s", "5 min": a wait as a person reads it.
pub fn human(ms: u64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
        ms => format!("{:.1} s", ms as f64 / 1_000.0),
    }
}
