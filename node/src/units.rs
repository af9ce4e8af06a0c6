//! Parsing of the quantities operators type: bit rates with `k`/`M` suffixes.

/// Parses a bit rate in bit/s: `2500k`, `2.5M`, `96000`. Accepts 8 kbit/s to 100 Gbit/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000.0),
        Some('M' | 'm') => (&s[..s.len() - 1], 1_000_000.0),
        Some('G' | 'g') => (&s[..s.len() - 1], 1_000_000_000.0),
        _ => (s, 1.0),
    };
    let v: f64 = digits.parse().map_err(|_| format!("bad bit rate {s:?}"))?;
    let bps = v * mult;
    if !(8_000.0..=100_000_000_000.0).contains(&bps) {
        return Err(format!("bit rate {s} is outside 8k..100G"));
    }
    Ok(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("2500k"), Ok(2_500_000));
        assert_eq!(parse_rate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_rate("1G"), Ok(1_000_000_000));
        assert_eq!(parse_rate("96000"), Ok(96_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("1").is_err());
    }
}
