//! Number literals as people write them in math text: `1,234.50`, `-3`,
//! `$18.00`, `3/4`, `45%`.
//!
//! One byte-level scanner serves answers, questions and claims, so the three
//! agree on what a number is.

/// A number found in a text, with its byte span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    pub start: usize,
    pub end: usize,
    pub value: f64,
    /// Written with a trailing `%` (the value itself is not divided by 100).
    pub percent: bool,
}

/// Parses digits with optional `,` thousands groups and a decimal part from
/// `i`; returns (end, value). `None` when no digit is there.
pub fn parse_unsigned(b: &[u8], mut i: usize) -> Option<(usize, f64)> {
    let start = i;
    // Integer mantissa and decimal count keep `0.2` exact (one correctly
    // rounded division) instead of accumulating float error digit by digit.
    let mut mant: u64 = 0;
    let mut approx = 0.0f64;
    let mut digits = 0usize;
    let mut decimals = 0i32;
    let push = |d: u8, mant: &mut u64, approx: &mut f64| {
        *mant = mant.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        *approx = *approx * 10.0 + f64::from(d - b'0');
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            push(c, &mut mant, &mut approx);
            digits += 1;
            i += 1;
        } else if c == b',' && digits > 0 && is_thousands_group(b, i + 1) {
            i += 1;
        } else {
            break;
        }
    }
    if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            push(b[i], &mut mant, &mut approx);
            digits += 1;
            decimals += 1;
            i += 1;
        }
    }
    if digits == 0 || i == start {
        return None;
    }
    let scaled = if digits <= 19 { mant as f64 } else { approx };
    Some((i, scaled / 10f64.powi(decimals)))
}

/// `,` separates thousands only before exactly three digits (`1,234`), not in
/// lists like `3, 4` or `1,23`.
fn is_thousands_group(b: &[u8], i: usize) -> bool {
    i + 3 <= b.len() && b[i..i + 3].iter().all(u8::is_ascii_digit) && !b.get(i + 3).is_some_and(u8::is_ascii_digit)
}

/// Parses a number at `i` (optionally `-`, `$`, `-$`, `$-` first), with
/// `a/b` fractions when `fractions` is set and a `%` suffix.
pub fn parse_at(b: &[u8], i: usize, fractions: bool) -> Option<Number> {
    let start = i;
    let mut j = i;
    let mut negative = false;
    if b.get(j) == Some(&b'-') {
        negative = true;
        j += 1;
    }
    if b.get(j) == Some(&b'$') {
        j += 1;
        if !negative && b.get(j) == Some(&b'-') {
            negative = true;
            j += 1;
        }
    }
    let (mut end, mut value) = parse_unsigned(b, j)?;
    if fractions && b.get(end) == Some(&b'/') && !b[j..end].contains(&b'.') {
        if let Some((den_end, den)) = parse_unsigned(b, end + 1) {
            if den != 0.0 && !b[end + 1..den_end].contains(&b'.') {
                value /= den;
                end = den_end;
            }
        }
    }
    let percent = b.get(end) == Some(&b'%');
    if percent {
        end += 1;
    }
    if negative {
        value = -value;
    }
    Some(Number { start, end, value, percent })
}

/// All numbers of a text, left to right.
pub fn numbers(text: &str, fractions: bool) -> Numbers<'_> {
    Numbers { b: text.as_bytes(), i: 0, fractions }
}

pub struct Numbers<'a> {
    b: &'a [u8],
    i: usize,
    fractions: bool,
}

impl Iterator for Numbers<'_> {
    type Item = Number;

    fn next(&mut self) -> Option<Number> {
        let b = self.b;
        while self.i < b.len() {
            let i = self.i;
            let starts_digits = b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
            if !starts_digits {
                self.i += 1;
                continue;
            }
            let start = signed_start(b, i);
            match parse_at(b, start, self.fractions) {
                Some(n) => {
                    self.i = n.end.max(i + 1);
                    return Some(n);
                }
                None => self.i += 1,
            }
        }
        None
    }
}

/// Moves the start of the number whose first digit is at `i` back over `$`
/// and over a `-` that is a sign, not a binary minus (`10 -3` is a
/// subtraction, `to -5` a negative number).
fn signed_start(b: &[u8], i: usize) -> usize {
    let mut s = i;
    if s > 0 && b[s - 1] == b'$' {
        s -= 1;
    }
    if s > 0 && b[s - 1] == b'-' && !follows_operand(b, s - 1) {
        s -= 1;
    }
    s
}

/// Whether the nearest non-space byte before `i` ends an operand.
fn follows_operand(b: &[u8], i: usize) -> bool {
    b[..i]
        .iter()
        .rev()
        .find(|c| !c.is_ascii_whitespace())
        .is_some_and(|&c| c.is_ascii_digit() || c == b')' || c == b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &str) -> Vec<f64> {
        numbers(t, true).map(|n| n.value).collect()
    }

    #[test]
    fn separators_signs_fractions() {
        assert_eq!(values("$1,234.50 and -3"), vec![1234.5, -3.0]);
        assert_eq!(values("3/4 of 12"), vec![0.75, 12.0]);
        assert_eq!(values("10 -3"), vec![10.0, 3.0]);
        assert_eq!(values("list 3, 4, 1,23"), vec![3.0, 4.0, 1.0, 23.0]);
        assert_eq!(values("it is 42."), vec![42.0]);
        assert_eq!(values("0.2 x .5"), vec![0.2, 0.5]);
        assert_eq!(values("1/0"), vec![1.0, 0.0]);
    }
}
