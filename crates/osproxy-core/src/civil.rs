//! Proleptic Gregorian dates and days since 1970-01-01, both ways, for the
//! timestamps osproxy reads (RFC 3339 expiries) and writes (SigV4 dates).

/// Whether `y` is a leap year.
pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1–12) of year `y`.
pub fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of the date `y`-`m`-`d`.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let years: i64 = if y >= 1970 {
        (1970..y)
            .map(|year| if is_leap(year) { 366 } else { 365 })
            .sum()
    } else {
        -(y..1970)
            .map(|year| if is_leap(year) { 366 } else { 365 })
            .sum::<i64>()
    };
    let months: i64 = (1..m).map(|month| days_in_month(y, month)).sum();
    years + months + d - 1
}

/// The date (year, month, day) `days` after 1970-01-01: whole years, then
/// whole months, counted off (the inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let (mut y, mut left) = (1970, days);
    loop {
        let len = if is_leap(y) { 366 } else { 365 };
        if left < 0 {
            y -= 1;
            left += if is_leap(y) { 366 } else { 365 };
        } else if left >= len {
            left -= len;
            y += 1;
        } else {
            break;
        }
    }
    let mut m = 1;
    while left >= days_in_month(y, m) {
        left -= days_in_month(y, m);
        m += 1;
    }
    (y, m, left + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_agree_on_known_dates() {
        for (days, date) in [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (16_677, (2015, 8, 30)),
            (-1, (1969, 12, 31)),
            (20_789, (2026, 12, 2)),
        ] {
            assert_eq!(civil_from_days(days), date, "{days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
    }
}
