//! Final-answer extraction and numeric comparison: the one extractor of the
//! product, so training rewards and evaluation can never disagree.

use crate::error::Error;
use crate::number::{numbers, parse_at, Number};

/// Relative tolerance of answer equality; GSM8K answers are short decimals.
pub const ANSWER_RTOL: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub value: f64,
    /// The number as written (`$1,000`, `3/4`).
    pub text: String,
    /// No answer marker was found; the last number was taken.
    pub flexible: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Markers first, then the last number.
    Auto,
    /// Only `#### N` (lm-eval's strict match).
    Strict,
    /// Only the last number.
    Flexible,
}

impl std::str::FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Mode::Auto),
            "strict" => Ok(Mode::Strict),
            "flexible" => Ok(Mode::Flexible),
            other => Err(Error::BadMode(other.to_owned())),
        }
    }
}

/// Numeric equality with a small relative tolerance; `None` equals nothing.
pub fn answers_equal(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
            (a - b).abs() <= ANSWER_RTOL * a.abs().max(b.abs()).max(1.0)
        }
        _ => false,
    }
}

pub fn extract(text: &str, mode: Mode) -> Option<Answer> {
    match mode {
        Mode::Strict => after_marker(text, rfind(text, "####")?),
        Mode::Flexible => last_number(text),
        Mode::Auto => {
            // R1-style reasoning blocks may hold drafts; what follows the last
            // `</think>` is the real answer when it has one.
            if let Some(p) = rfind(text, "</think>") {
                if let Some(a) = auto(&text[p..]) {
                    return Some(a);
                }
            }
            auto(text)
        }
    }
}

fn auto(text: &str) -> Option<Answer> {
    marked(text).or_else(|| last_number(text))
}

/// The markers in order of trust; the last occurrence of each counts, and a
/// marker is only searched for when the ones before it gave nothing.
fn marked(text: &str) -> Option<Answer> {
    let b = text.as_bytes();
    let finders: [&dyn Fn() -> Option<usize>; 5] = [
        &|| rfind(text, "####"),
        &|| rfind(text, "\\boxed{"),
        &|| rfind_ci(b, b"answer is"),
        &|| rfind_ci(b, b"answer:"),
        &|| rfind_line_start(b, b"A:"),
    ];
    finders.iter().find_map(|find| after_marker(text, find()?))
}

/// The number right after a marker ending at `i`, past decoration such as
/// `: **$`, `\boxed{` or `\(`; a marker followed by prose yields nothing.
fn after_marker(text: &str, mut i: usize) -> Option<Answer> {
    let b = text.as_bytes();
    let limit = (i + 32).min(b.len());
    while i < limit {
        if let Some(skip) = decoration(&b[i..]) {
            i += skip;
        } else {
            break;
        }
    }
    if let Some(a) = latex_frac(text, i) {
        return Some(a);
    }
    let n = parse_at(b, i, true)?;
    Some(answer(text, n, false))
}

/// Length of a decoration token at the start of `b`.
fn decoration(b: &[u8]) -> Option<usize> {
    const WORDS: [&[u8]; 4] = [b"\\boxed{", b"\\text{", b"\\(", b"\\["];
    if let Some(w) = WORDS.iter().find(|w| b.starts_with(w)) {
        return Some(w.len());
    }
    matches!(b.first()?, b' ' | b'\t' | b'\n' | b'\r' | b':' | b'*' | b'{' | b'=' | b'(').then_some(1)
}

/// `\frac{a}{b}` and `\dfrac{a}{b}` as a fraction.
fn latex_frac(text: &str, i: usize) -> Option<Answer> {
    let b = text.as_bytes();
    let rest = &b[i..];
    let open = if rest.starts_with(b"\\frac{") {
        6
    } else if rest.starts_with(b"\\dfrac{") {
        7
    } else {
        return None;
    };
    let num = parse_at(b, i + open, false)?;
    if !b[num.end..].starts_with(b"}{") {
        return None;
    }
    let den = parse_at(b, num.end + 2, false)?;
    if den.value == 0.0 || b.get(den.end) != Some(&b'}') {
        return None;
    }
    Some(Answer { value: num.value / den.value, text: text[i..den.end + 1].to_owned(), flexible: false })
}

fn last_number(text: &str) -> Option<Answer> {
    let n = numbers(text, true).last()?;
    Some(answer(text, n, true))
}

fn answer(text: &str, n: Number, flexible: bool) -> Answer {
    let written = text[n.start..n.end].trim_end_matches('%');
    Answer { value: n.value, text: written.to_owned(), flexible }
}

/// End of the last occurrence of `needle`. Forward SIMD search, keeping the
/// last hit: most texts hold no `</think>` or `\\boxed{` and are scanned
/// whole, and memchr's reverse searcher has no SIMD path. The searchers are
/// built once.
fn rfind(text: &str, needle: &'static str) -> Option<usize> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static FINDERS: LazyLock<[Finder<'static>; 3]> =
        LazyLock::new(|| ["####", "</think>", "\\boxed{"].map(Finder::new));
    let hay = text.as_bytes();
    let last = match FINDERS.iter().find(|f| f.needle() == needle.as_bytes()) {
        Some(f) => f.find_iter(hay).last(),
        None => memchr::memmem::find_iter(hay, needle.as_bytes()).last(),
    };
    // find_iter skips overlapping hits: in `##### 72` the last `####` starts
    // one byte after the hit it reports.
    let mut p = last?;
    while hay[p + 1..].starts_with(needle.as_bytes()) {
        p += 1;
    }
    Some(p + needle.len())
}

/// End of the last ASCII-case-insensitive occurrence of `needle` (which
/// starts with a letter): candidates are found with SIMD `memrchr2`.
fn rfind_ci(b: &[u8], needle: &[u8]) -> Option<usize> {
    let n = needle.len();
    let first = needle[0].to_ascii_lowercase();
    memchr::memrchr2_iter(first, first.to_ascii_uppercase(), b)
        .find(|&s| b.len() - s >= n && b[s..s + n].eq_ignore_ascii_case(needle))
        .map(|s| s + n)
}

/// End of the last occurrence of `needle` that starts a line.
fn rfind_line_start(b: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind_iter(b, needle).find(|&s| s == 0 || b[s - 1] == b'\n').map(|s| s + needle.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &str) -> Option<f64> {
        extract(t, Mode::Auto).map(|a| a.value)
    }

    #[test]
    fn markers() {
        assert_eq!(v("so 3 then\n#### 1,000"), Some(1000.0));
        assert_eq!(v("The answer is $18.00."), Some(18.0));
        assert_eq!(v("Answer: -4 apples"), Some(-4.0));
        assert_eq!(v("blah 5\nA: 7"), Some(7.0));
        assert_eq!(v("\\boxed{3/4}"), Some(0.75));
        assert_eq!(v("\\boxed{\\frac{1}{8}}"), Some(0.125));
        assert_eq!(v("it is 45% of 20 so 12"), Some(12.0));
        assert_eq!(v("The answer is **42**"), Some(42.0));
        assert_eq!(v("no numbers here"), None);
        for hashes in ["#####", "######", "#######"] {
            let text = format!("so 3\n{hashes} 72");
            assert_eq!(v(&text), Some(72.0), "{text}");
            assert_eq!(extract(&text, Mode::Strict).map(|a| (a.value, a.flexible)), Some((72.0, false)), "{text}");
        }
        assert_eq!(v(""), None);
    }

    #[test]
    fn flexible_flag_and_text() {
        let a = extract("she has 12 dollars", Mode::Auto).unwrap();
        assert!(a.flexible);
        assert_eq!(a.text, "12");
        let a = extract("#### $1,200", Mode::Auto).unwrap();
        assert!(!a.flexible);
        assert_eq!(a.text, "$1,200");
        assert_eq!(extract("answer is 5", Mode::Strict), None);
        assert_eq!(extract("#### 5 then 6", Mode::Flexible).unwrap().value, 6.0);
    }

    #[test]
    fn think_blocks() {
        assert_eq!(v("<think>maybe 3? #### 3</think> The answer is 4"), Some(4.0));
        assert_eq!(v("<think>so 3</think> done."), Some(3.0));
    }

    #[test]
    fn equality() {
        assert!(answers_equal(Some(18.0), Some(18.000000001)));
        assert!(!answers_equal(Some(18.0), Some(18.01)));
        assert!(!answers_equal(None, None));
        assert!(!answers_equal(Some(f64::NAN), Some(f64::NAN)));
    }
}
