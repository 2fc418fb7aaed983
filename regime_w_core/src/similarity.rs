//! Path similarity of two solutions: (a) the overlap of the multisets of
//! intermediate values their claims compute and (b) the normalised LCS of
//! their step token streams, `2 * lcs / (|a| + |b|)`.
//!
//! Words are hashed to u32 once per solution. A group then renames its
//! hashes to dense ids so each pattern gets a flat table of match masks, and
//! LCS runs bit-parallel (Allison-Dix / Hyyrö): one word-wide add per 64
//! tokens of the pattern and token of the text, no per-pair hashing.

use rustc_hash::FxHashMap;

/// Tokens kept per solution; bounds the quadratic kernel on huge texts.
pub const MAX_TOKENS: usize = 4096;

/// Word ids of a text: lowercase alphanumeric runs (thousands commas dropped
/// so `1,000` == `1000`) and single operator symbols; `<<...>>` calculator
/// annotations are skipped, they repeat the prose around them.
pub fn tokenize(text: &str, out: &mut Vec<u32>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < MAX_TOKENS {
        let c = b[i];
        if is_word_byte(c) {
            let mut h = Hash::default();
            while i < b.len() {
                let c = b[i];
                if is_word_byte(c) || (c == b'.' && digit_at(b, i + 1) && digit_at(b, i.wrapping_sub(1))) {
                    h.push(c.to_ascii_lowercase());
                } else if !(c == b',' && digit_at(b, i + 1) && digit_at(b, i.wrapping_sub(1))) {
                    break;
                }
                i += 1;
            }
            out.push(h.finish());
        } else if c == b'<' && b.get(i + 1) == Some(&b'<') {
            i = text[i..].find(">>").map_or(b.len(), |e| i + e + 2);
        } else {
            if matches!(c, b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'%') {
                let mut h = Hash::default();
                h.push(c);
                out.push(h.finish());
            }
            i += 1;
        }
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80
}

fn digit_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

/// FxHash-style byte hash; 32 bits are plenty for a few thousand words.
#[derive(Default)]
struct Hash(u64);

impl Hash {
    fn push(&mut self, c: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(c)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Key of an intermediate value: equal for values equal to 1e-6.
pub fn value_key(v: f64) -> i64 {
    if v.abs() < 1e12 {
        (v * 1e6).round() as i64
    } else {
        v.to_bits() as i64
    }
}

/// Dice overlap of two sorted multisets.
pub fn multiset_dice(a: &[i64], b: &[i64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// Combines sequence similarity with value overlap. Values weigh half when
/// either side has any; two value-free paths are compared by words alone.
pub fn combine(seq: f64, values_a: &[i64], values_b: &[i64]) -> f64 {
    if values_a.is_empty() && values_b.is_empty() {
        seq
    } else {
        0.5 * seq + 0.5 * multiset_dice(values_a, values_b)
    }
}

/// `2 * lcs / (la + lb)`; 0 when both are empty (nothing to stand on).
pub fn normalised(lcs: usize, la: usize, lb: usize) -> f64 {
    if la + lb == 0 {
        0.0
    } else {
        (2 * lcs) as f64 / (la + lb) as f64
    }
}

/// Renames the hashes of several token streams to dense ids `0..vocab`.
pub struct Dense {
    pub streams: Vec<Vec<u32>>,
    pub vocab: usize,
}

impl Dense {
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a [u32]>) -> Dense {
        let mut ids: FxHashMap<u32, u32> = FxHashMap::default();
        let streams = streams
            .into_iter()
            .map(|s| {
                s.iter()
                    .map(|&h| {
                        let next = ids.len() as u32;
                        *ids.entry(h).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        Dense { streams, vocab: ids.len() }
    }
}

/// Match masks of one pattern: bit `k` of row `id` is set when pattern token
/// `k` is `id`.
pub struct Pattern {
    words: usize,
    len: usize,
    rows: Vec<u64>,
}

impl Pattern {
    pub fn new(tokens: &[u32], vocab: usize) -> Pattern {
        let words = tokens.len().div_ceil(64).max(1);
        let mut rows = vec![0u64; vocab * words];
        for (k, &t) in tokens.iter().enumerate() {
            rows[t as usize * words + k / 64] |= 1 << (k % 64);
        }
        Pattern { words, len: tokens.len(), rows }
    }

    /// LCS length of the pattern and `text` (dense ids of the same vocab).
    pub fn lcs(&self, text: &[u32]) -> usize {
        if self.len == 0 || text.is_empty() {
            return 0;
        }
        match self.words {
            1 => self.lcs_fixed::<1>(text),
            2 => self.lcs_fixed::<2>(text),
            3 => self.lcs_fixed::<3>(text),
            4 => self.lcs_fixed::<4>(text),
            5 => self.lcs_fixed::<5>(text),
            6 => self.lcs_fixed::<6>(text),
            7 => self.lcs_fixed::<7>(text),
            8 => self.lcs_fixed::<8>(text),
            _ => self.lcs_any(text),
        }
    }

    /// Fixed widths let the compiler keep the state in registers and unroll
    /// the carry chain.
    fn lcs_fixed<const W: usize>(&self, text: &[u32]) -> usize {
        let mut v = [!0u64; W];
        for &t in text {
            let row: &[u64; W] = self.rows[t as usize * W..][..W].try_into().expect("row width");
            step(&mut v, row);
        }
        self.zeros(&v)
    }

    fn lcs_any(&self, text: &[u32]) -> usize {
        let mut v = vec![!0u64; self.words];
        for &t in text {
            step(&mut v, &self.rows[t as usize * self.words..][..self.words]);
        }
        self.zeros(&v)
    }

    /// Zero bits of the state within the pattern length = LCS length.
    fn zeros(&self, v: &[u64]) -> usize {
        let ones: usize = v.iter().map(|w| w.count_ones() as usize).sum();
        // Bits past the pattern end stay 1 forever (their mask bit is 0).
        self.words * 64 - ones
    }
}

/// One text token: `V = (V + (V & M)) | (V & !M)` with carries across words.
#[inline(always)]
fn step(v: &mut [u64], m: &[u64]) {
    let mut carry = false;
    for (x, &m) in v.iter_mut().zip(m) {
        let u = *x & m;
        let (s, c1) = x.overflowing_add(u);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        carry = c1 | c2;
        *x = s | (*x & !m);
    }
}

/// Sequence similarity of two hashed token streams, without a group table.
pub fn sequence_similarity(a: &[u32], b: &[u32]) -> f64 {
    let dense = Dense::new([a, b]);
    let lcs = Pattern::new(&dense.streams[0], dense.vocab).lcs(&dense.streams[1]);
    normalised(lcs, a.len(), b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(t: &str) -> Vec<u32> {
        let mut v = Vec::new();
        tokenize(t, &mut v);
        v
    }

    /// Plain dynamic programme, the reference for the bit-parallel kernel.
    pub fn lcs_reference(a: &[u32], b: &[u32]) -> usize {
        let mut prev = vec![0usize; b.len() + 1];
        for &x in a {
            let mut cur = vec![0usize; b.len() + 1];
            for (j, &y) in b.iter().enumerate() {
                cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
            }
            prev = cur;
        }
        prev[b.len()]
    }

    #[test]
    fn tokens() {
        assert_eq!(toks("Sold 1,000 apples"), toks("sold 1000 APPLES"));
        assert_eq!(toks("48/2 = <<48/2=24>>24").len(), 5);
        assert_eq!(toks("3.5 cups.").len(), 2);
        assert!(toks("").is_empty());
    }

    #[test]
    fn kernel_matches_reference() {
        let a: Vec<u32> = (0..300).map(|i| (i * 7 % 13) as u32).collect();
        let b: Vec<u32> = (0..250).map(|i| (i * 5 % 11) as u32).collect();
        let dense = Dense::new([a.as_slice(), b.as_slice()]);
        let got = Pattern::new(&dense.streams[0], dense.vocab).lcs(&dense.streams[1]);
        assert_eq!(got, lcs_reference(&a, &b));
    }

    #[test]
    fn similarity_bounds() {
        let a = toks("she has 5 apples");
        assert_eq!(sequence_similarity(&a, &a), 1.0);
        assert_eq!(sequence_similarity(&a, &toks("zero overlap here")), 0.0);
        assert_eq!(sequence_similarity(&[], &[]), 0.0);
        assert_eq!(multiset_dice(&[1, 2, 2], &[2, 2, 3]), 2.0 * 2.0 / 6.0);
    }
}
