//! Reasoning steps and the arithmetic claims they make.
//!
//! A step is a line, or a sentence when the solution is a single line. A
//! claim is `expr = value`, either in prose (`48/2 = 24`) or in the GSM8K
//! calculator form `<<48/2=24>>`.

use crate::expr::{Expr, LATEX_OPS, MAX_LEN};
use crate::number::parse_at;

/// Claims kept per solution: bounds the counterfactual pass on huge texts.
pub const MAX_CLAIMS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub expr: Expr,
    /// The value the text states.
    pub stated: f64,
    /// What the expression computes (`None`: division by zero, overflow).
    pub computed: Option<f64>,
}

impl Claim {
    /// Whether the stated value is what the expression computes, allowing the
    /// rounding that the stated decimals imply (`100/3 = 33.33`).
    pub fn is_valid(&self) -> bool {
        self.computed.is_some_and(|c| agrees(c, self.stated))
    }

    /// The value later steps build on: computed when it exists.
    pub fn value(&self) -> f64 {
        self.computed.unwrap_or(self.stated)
    }
}

fn agrees(computed: f64, stated: f64) -> bool {
    let diff = (computed - stated).abs();
    if diff <= 1e-6 * computed.abs().max(stated.abs()).max(1.0) {
        return true;
    }
    let decimals = decimals_of(stated);
    decimals > 0 && diff <= 0.5 * 10f64.powi(-decimals) + 1e-9
}

/// Decimals written in a stated value (2 for 33.33), up to 6.
fn decimals_of(v: f64) -> i32 {
    (0..=6).find(|&d| ((v * 10f64.powi(d)).round() - v * 10f64.powi(d)).abs() < 1e-6).unwrap_or(6)
}

/// Steps of a solution: its non-empty lines, or its sentences when it is one
/// line. Claim scanning (`expression_start`) never crosses these boundaries,
/// nor a sentence end inside a line, without splitting the text.
pub fn split_steps(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() != 1 {
        return lines;
    }
    let line = lines[0];
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..b.len() {
        if sentence_end(b, i) {
            push_trimmed(&mut out, &line[start..=i]);
            start = i + 1;
        }
    }
    push_trimmed(&mut out, &line[start..]);
    out
}

/// `.`, `!` or `?` followed by whitespace ends a sentence (`0.5` does not).
fn sentence_end(b: &[u8], i: usize) -> bool {
    matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1).is_some_and(u8::is_ascii_whitespace)
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let s = s.trim();
    if !s.is_empty() {
        out.push(s);
    }
}

/// Every claim of a text, in reading order, at most `MAX_CLAIMS`. One SIMD
/// pass finds the `<<` and `=` candidates; a claim never crosses a step
/// boundary (a line or sentence end).
pub fn claims(text: &str) -> Vec<Claim> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < MAX_CLAIMS {
        let Some(at) = memchr::memchr2(b'<', b'=', &b[i..]) else { break };
        i += at;
        if b[i..].starts_with(b"<<") {
            let body = memchr::memmem::find(&b[i + 2..], b">>").map(|e| i + 2..i + 2 + e);
            match body {
                Some(body) if !b[body.clone()].contains(&b'\n') => {
                    out.extend(annotation(&text[body.clone()]));
                    i = body.end + 2;
                }
                _ => i += 2,
            }
        } else {
            if b[i] == b'=' {
                out.extend(prose_claim(text, i));
            }
            i += 1;
        }
    }
    out
}

/// `48/2=24` inside `<<...>>`.
fn annotation(body: &str) -> Option<Claim> {
    let eq = body.rfind('=')?;
    let stated = parse_at(body.as_bytes(), skip_space(body.as_bytes(), eq + 1), true)?;
    claim(&body[..eq], stated.value)
}

/// The claim whose `=` is at `eq`: the widest run of expression characters
/// before it, the number after it.
fn prose_claim(step: &str, eq: usize) -> Option<Claim> {
    let b = step.as_bytes();
    let start = expression_start(b, eq);
    let stated = parse_at(b, skip_space(b, eq + 1), true)?;
    claim(&step[start..eq], stated.value)
}

fn claim(lhs: &str, stated: f64) -> Option<Claim> {
    let mut lhs = lhs.trim();
    // The `(` of a LaTeX `\(` or of prose around the claim opens nothing.
    while lhs.starts_with('(') && lhs.matches('(').count() > lhs.matches(')').count() {
        lhs = lhs[1..].trim_start();
    }
    let expr = Expr::parse(lhs).ok()?;
    // A lone number (`Total = 24`) asserts nothing to check.
    if expr.leaves.len() < 2 {
        return None;
    }
    let computed = expr.eval();
    Some(Claim { expr, stated, computed })
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Walks left from `eq` over bytes that can belong to an expression, up to
/// the start of the step. A letter `x` counts only as a standalone operator
/// (`5 x 2`, not `box`).
fn expression_start(b: &[u8], eq: usize) -> usize {
    let floor = eq.saturating_sub(MAX_LEN);
    let mut s = eq;
    while s > floor {
        let c = b[s - 1];
        if sentence_end(b, s - 1) {
            break;
        }
        let latex = || LATEX_OPS.iter().map(|(cmd, _)| cmd).find(|cmd| b[floor..s].ends_with(cmd));
        if let Some(cmd) = c.is_ascii_alphabetic().then(latex).flatten() {
            s -= cmd.len();
            continue;
        }
        let ok = match c {
            b'0'..=b'9' | b' ' | b'.' | b',' | b'+' | b'-' | b'*' | b'/' | b'^' | b'%' | b'(' | b')' | b'$' => true,
            b'x' | b'X' => s < 2 || matches!(b[s - 2], b' ' | b'0'..=b'9' | b')'),
            // The UTF-8 tails of × (C3 97) and ÷ (C3 B7).
            0x97 | 0xB7 => s >= 2 && b[s - 2] == 0xC3,
            0xC3 => true,
            _ => false,
        };
        if !ok {
            break;
        }
        s -= 1;
    }
    // A leading `,` or `.` is punctuation of the sentence, not the number.
    while s < eq && matches!(b[s], b',' | b'.' | b' ' | b')') {
        s += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(t: &str) -> Vec<(Vec<f64>, f64, bool)> {
        claims(t).into_iter().map(|c| (c.expr.leaves.clone(), c.stated, c.is_valid())).collect()
    }

    #[test]
    fn gsm8k_annotations() {
        let t = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72";
        assert_eq!(pairs(t), vec![(vec![48.0, 2.0], 24.0, true), (vec![48.0, 24.0], 72.0, true)]);
    }

    #[test]
    fn prose_claims() {
        assert_eq!(pairs("So 0.2 x 50 = $10."), vec![(vec![0.2, 50.0], 10.0, true)]);
        assert_eq!(pairs("Then 2 + 3 = 5 + 1 = 6"), vec![(vec![2.0, 3.0], 5.0, true), (vec![5.0, 1.0], 6.0, true)]);
        assert_eq!(pairs("box = 5, Total = 24"), vec![]);
        assert_eq!(
            pairs("100/3 = 33.33 and 10/3 = 3"),
            vec![(vec![100.0, 3.0], 33.33, true), (vec![10.0, 3.0], 3.0, false)]
        );
        assert_eq!(pairs("Yes, 48 × 2 = 96"), vec![(vec![48.0, 2.0], 96.0, true)]);
        assert_eq!(pairs("It costs $5. 3 + 4 = 7"), vec![(vec![3.0, 4.0], 7.0, true)]);
        assert_eq!(pairs("so \\( 48 \\times 2 = 96 \\)"), vec![(vec![48.0, 2.0], 96.0, true)]);
        assert_eq!(pairs("\\(12 \\div 4 \\cdot 2 = 6\\)"), vec![(vec![12.0, 4.0, 2.0], 6.0, true)]);
        assert_eq!(pairs("(so 5 + 3 = 8)"), vec![(vec![5.0, 3.0], 8.0, true)]);
        assert_eq!(pairs("2 + <<2\n+3=5>> 1 = 3"), vec![]);
        assert_eq!(pairs("1/0 = 5"), vec![(vec![1.0, 0.0], 5.0, false)]);
    }

    #[test]
    fn steps() {
        assert_eq!(split_steps("a\n\n b \nc"), vec!["a", "b", "c"]);
        assert_eq!(
            split_steps("It costs 0.5 each. So 2 cost 1! Done"),
            vec!["It costs 0.5 each.", "So 2 cost 1!", "Done"]
        );
        assert!(split_steps("").is_empty());
    }
}
