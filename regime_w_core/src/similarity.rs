//! Path similarity of two solutions: (a) the overlap of the multisets of
//! intermediate values their claims compute and (b) the normalised LCS of
//! their step token streams, `2 * lcs / (|a| + |b|)`.
//!
//! Words are hashed to u32 once per solution. A group then renames its
//! hashes to dense ids so each pattern gets a flat table of match masks, and
//! LCS runs bit-parallel (Allison-Dix / Hyyrö): one word-wide add per 64
//! tokens of the pattern and token of the text, no per-pair hashing.

/// Tokens kept per solution; bounds the quadratic kernel on huge texts.
pub const MAX_TOKENS: usize = 4096;

/// Function words carry no reasoning; dropping them also shortens the
/// streams the quadratic kernel runs over by about a third.
const STOPWORDS: [&str; 48] = [
    "a", "an", "the", "and", "or", "but", "so", "then", "to", "of", "in", "on", "at", "for", "with", "by", "from",
    "as", "is", "are", "was", "were", "be", "it", "its", "this", "that", "there", "we", "us", "our", "you", "he",
    "she", "they", "them", "his", "her", "their", "i", "do", "does", "has", "have", "had", "will", "can", "now",
];
const MAX_STOPWORD_LEN: usize = longest(&STOPWORDS);

const fn longest(words: &[&str]) -> usize {
    let (mut i, mut most) = (0, 0);
    while i < words.len() {
        if words[i].len() > most {
            most = words[i].len();
        }
        i += 1;
    }
    most
}

/// Word ids of a text: lowercase alphanumeric runs (`.` and `,` join them
/// between digits; thousands commas are dropped so `1,000` == `1000`) and
/// single operator symbols, minus stopwords. `<<...>>` calculator
/// annotations are skipped: they repeat the prose around them.
pub fn tokenize(text: &str, out: &mut Vec<u32>) {
    let b = text.as_bytes();
    let mut from = 0;
    while from < b.len() && out.len() < MAX_TOKENS {
        let open = memchr::memmem::find(&b[from..], b"<<").map_or(b.len(), |p| from + p);
        tokenize_span(b, from, open, out);
        from = memchr::memmem::find(&b[open..], b">>").map_or(b.len(), |p| open + p + 2);
    }
    out.truncate(MAX_TOKENS);
}

/// Tokens of `b[from..to]`, 64 bytes at a time: byte classes become bit
/// masks without branches and tokens are read off the masks, which avoids
/// the per-byte branch mispredictions of a scalar scanner.
fn tokenize_span(b: &[u8], mut from: usize, to: usize, out: &mut Vec<u32>) {
    let stop = stopwords();
    while from < to && out.len() < MAX_TOKENS {
        let n = (to - from).min(64);
        let m = Masks::new(&b[from..from + n], from + n < to && b[from + n].is_ascii_digit());
        let runs = m.word | m.joint;
        let all = if n == 64 { !0 } else { (1u64 << n) - 1 };
        // A run reaching the block end may go on: it is read again, whole,
        // from the next block (a run filling the block is read scalar).
        let open_run = if from + n < to && runs >> (n - 1) & 1 == 1 {
            (!runs & all).checked_ilog2().map_or(0, |z| z + 1)
        } else {
            64
        };
        let mut starts = ((runs & !(runs << 1)) | m.op) & all;
        if open_run < 64 {
            starts &= (1u64 << open_run) - 1;
        }
        // Every token is written and a bit says whether to keep it: no
        // branch to mispredict, and no store waiting on the stopword lookup.
        let mut block = [0u32; 64];
        let (mut count, mut keep) = (0, 0u64);
        while starts != 0 {
            let k = starts.trailing_zeros() as usize;
            starts &= starts - 1;
            let len = if m.op >> k & 1 == 1 { 1 } else { (!(runs >> k)).trailing_zeros() as usize };
            let word_mask = if len == 64 { !0 } else { (1u64 << len) - 1 };
            let h = if (m.comma >> k) & word_mask != 0 {
                hash_without_commas(&b[from + k..from + k + len])
            } else {
                hash_word(b, from + k, from + k + len)
            };
            block[count] = h;
            keep |= u64::from((len > MAX_STOPWORD_LEN) | !stop.contains(h)) << count;
            count += 1;
        }
        while keep != 0 {
            out.push(block[keep.trailing_zeros() as usize]);
            keep &= keep - 1;
        }
        from = match open_run {
            0 => {
                let end = scalar_word_end(b, from, to);
                out.push(hash_without_commas(&b[from..end]));
                end
            }
            64 => from + n,
            k => from + k as usize,
        };
    }
}

/// Bit `k` of each mask describes byte `k` of a block of up to 64 bytes.
struct Masks {
    word: u64,
    /// `.` or `,` between two digits.
    joint: u64,
    comma: u64,
    op: u64,
}

impl Masks {
    fn new(block: &[u8], digit_after: bool) -> Masks {
        let c = classify(block);
        let last = block.len() - 1;
        let digit_next = (c.digit >> 1) | (u64::from(digit_after) << last);
        let joint = c.separator & (c.digit << 1) & digit_next;
        Masks { word: c.word, joint, comma: c.comma & joint, op: c.op }
    }
}

/// Per-byte classes of a block as bit masks.
#[derive(Default)]
struct Classes {
    word: u64,
    digit: u64,
    separator: u64,
    comma: u64,
    op: u64,
}

/// SSE2 (always present on x86_64): 16 bytes per compare, one movemask per
/// class. Padding past the block is zero, which is in no class.
#[cfg(target_arch = "x86_64")]
fn classify(block: &[u8]) -> Classes {
    use std::arch::x86_64::*;
    let mut padded = [0u8; 64];
    let full: &[u8] = if block.len() == 64 {
        block
    } else {
        padded[..block.len()].copy_from_slice(block);
        &padded
    };
    let mut c = Classes::default();
    for (i, chunk) in full.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of the x86_64 baseline, and `chunk` is 16
        // readable bytes (loadu needs no alignment).
        unsafe {
            let x = _mm_loadu_si128(chunk.as_ptr().cast());
            let splat = |b: u8| _mm_set1_epi8(b as i8);
            let eq = |b: u8| _mm_cmpeq_epi8(x, splat(b));
            let within = |v: __m128i, lo: u8, hi: u8| {
                _mm_and_si128(_mm_cmpgt_epi8(v, splat(lo - 1)), _mm_cmplt_epi8(v, splat(hi + 1)))
            };
            let digit = within(x, b'0', b'9');
            let letter = within(_mm_or_si128(x, splat(0x20)), b'a', b'z');
            // Bytes >= 0x80 are negative as i8: non-ASCII joins words.
            let high = _mm_cmplt_epi8(x, _mm_setzero_si128());
            let word = _mm_or_si128(_mm_or_si128(digit, letter), high);
            let comma = eq(b',');
            let separator = _mm_or_si128(comma, eq(b'.'));
            let op = [b'-', b'*', b'/', b'=', b'^', b'%'].iter().fold(eq(b'+'), |acc, &b| _mm_or_si128(acc, eq(b)));
            let bits = |v: __m128i| u64::from(_mm_movemask_epi8(v) as u16) << (16 * i);
            c.word |= bits(word);
            c.digit |= bits(digit);
            c.separator |= bits(separator);
            c.comma |= bits(comma);
            c.op |= bits(op);
        }
    }
    c
}

#[cfg(not(target_arch = "x86_64"))]
fn classify(block: &[u8]) -> Classes {
    let mut c = Classes::default();
    for (k, &b) in block.iter().enumerate() {
        let class = CLASS[usize::from(b)];
        c.word |= u64::from(class & WORD != 0) << k;
        c.digit |= u64::from(b.is_ascii_digit()) << k;
        c.separator |= u64::from(matches!(b, b'.' | b',')) << k;
        c.comma |= u64::from(b == b',') << k;
        c.op |= u64::from(class & OPERATOR != 0) << k;
    }
    c
}

/// End of an over-long word, the slow way.
fn scalar_word_end(b: &[u8], mut i: usize, to: usize) -> usize {
    while i < to {
        let c = b[i];
        let joins =
            (c == b'.' || c == b',') && i > 0 && b[i - 1].is_ascii_digit() && i + 1 < to && b[i + 1].is_ascii_digit();
        if CLASS[usize::from(c)] & WORD == 0 && !joins {
            break;
        }
        i += 1;
    }
    i
}

const WORD: u8 = 1;
const OPERATOR: u8 = 2;

/// Byte classes; non-ASCII bytes belong to words.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || b >= 0x80 {
            t[c] = WORD;
        } else if matches!(b, b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'%') {
            t[c] = OPERATOR;
        }
        c += 1;
    }
    t
};

/// Hash of `b[start..end]` (its first 64 bytes), ASCII-lowercased by setting
/// bit 5 of every byte, which leaves digits and `.` unchanged. Reads 8 bytes
/// at a time: words are short, so this is one multiply for most of them.
#[inline]
fn hash_word(b: &[u8], start: usize, end: usize) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let len = (end - start).min(64);
    let mut h = (len as u64).wrapping_mul(K);
    let mut at = start;
    while at < start + len {
        let n = (start + len - at).min(8);
        let x = (load8(b, at, n) | 0x2020_2020_2020_2020) & (!0u64 >> (64 - 8 * n));
        h = (h ^ x).wrapping_mul(K).rotate_left(31);
        at += n;
    }
    ((h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32) as u32
}

/// `n` (1..=8) bytes at `at`, little-endian; one unaligned load when the
/// buffer allows.
fn load8(b: &[u8], at: usize, n: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
        None => {
            let mut buf = [0u8; 8];
            buf[..n].copy_from_slice(&b[at..at + n]);
            u64::from_le_bytes(buf)
        }
    }
}

/// The rare number with thousands separators, hashed as if written without.
fn hash_without_commas(word: &[u8]) -> u32 {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &c in word.iter().filter(|&&c| c != b',').take(64) {
        buf[n] = c;
        n += 1;
    }
    hash_word(&buf[..n], 0, n)
}

/// The stopword hashes in a table whose multiplier is chosen so that no
/// two share a slot: membership is one load and one compare, and 2 KB stay
/// in L1.
struct StopSet {
    salt: u32,
    slots: [u64; 256],
}

impl StopSet {
    fn slot(salt: u32, h: u32) -> usize {
        (h.wrapping_mul(salt) >> 24) as usize
    }

    /// The stored key has bit 32 set, so an empty (zero) slot never matches.
    fn contains(&self, h: u32) -> bool {
        self.slots[Self::slot(self.salt, h)] == u64::from(h) | 1 << 32
    }
}

fn stopwords() -> &'static StopSet {
    static SET: std::sync::OnceLock<StopSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let hashes = STOPWORDS.map(|w| hash_word(w.as_bytes(), 0, w.len()));
        (0..u32::MAX)
            .map(|i| i.wrapping_mul(0x9E37_79B9) | 1)
            .find_map(|salt| {
                let mut slots = [0u64; 256];
                for &h in &hashes {
                    let slot = &mut slots[StopSet::slot(salt, h)];
                    if *slot != 0 {
                        return None;
                    }
                    *slot = u64::from(h) | 1 << 32;
                }
                Some(StopSet { salt, slots })
            })
            .expect("a collision-free multiplier exists for 48 words in 256 slots")
    })
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

/// Path similarity from the LCS of two streams (lengths `la`, `lb`) and
/// their value multisets. Each part counts when either side has something
/// for it, so sim(a, a) = 1 for any `a` with tokens or values, and 0 when
/// nothing is shared.
pub fn combine(lcs: usize, la: usize, lb: usize, values_a: &[i64], values_b: &[i64]) -> f64 {
    let has_tokens = la + lb > 0;
    let has_values = !values_a.is_empty() || !values_b.is_empty();
    let seq = || (2 * lcs) as f64 / (la + lb) as f64;
    match (has_tokens, has_values) {
        (true, true) => 0.5 * seq() + 0.5 * multiset_dice(values_a, values_b),
        (true, false) => seq(),
        (false, true) => multiset_dice(values_a, values_b),
        (false, false) => 0.0,
    }
}

/// Renames the hashes of several token streams to dense ids `0..vocab`.
pub struct Dense {
    pub streams: Vec<Vec<u32>>,
    pub vocab: usize,
}

impl Dense {
    /// One open-addressed table sized for the group: a lookup is a multiply
    /// and usually one probe, several times cheaper than a general hash map.
    pub fn new<'a>(streams: impl IntoIterator<Item = &'a [u32]> + Clone) -> Dense {
        let total: usize = streams.clone().into_iter().map(<[u32]>::len).sum();
        let bits = (2 * total).max(16).next_power_of_two().trailing_zeros();
        let mask = (1usize << bits) - 1;
        // Keys are stored as hash + 1 so that 0 marks an empty slot.
        let mut keys = vec![0u64; mask + 1];
        let mut ids = vec![0u32; mask + 1];
        let mut vocab = 0u32;
        let streams = streams
            .into_iter()
            .map(|s| {
                s.iter()
                    .map(|&h| {
                        let key = u64::from(h) + 1;
                        let mut slot = (h.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize & mask;
                        loop {
                            if keys[slot] == key {
                                return ids[slot];
                            }
                            if keys[slot] == 0 {
                                keys[slot] = key;
                                ids[slot] = vocab;
                                vocab += 1;
                                return vocab - 1;
                            }
                            slot = (slot + 1) & mask;
                        }
                    })
                    .collect()
            })
            .collect();
        Dense { streams, vocab: vocab as usize }
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

    /// LCS lengths of the pattern with two texts at once: the two
    /// dependency chains interleave, so the core retires both in about the
    /// time of one.
    pub fn lcs2(&self, a: &[u32], b: &[u32]) -> (usize, usize) {
        if self.len == 0 {
            return (0, 0);
        }
        match self.words {
            1 => self.lcs2_fixed::<1>(a, b),
            2 => self.lcs2_fixed::<2>(a, b),
            3 => self.lcs2_fixed::<3>(a, b),
            4 => self.lcs2_fixed::<4>(a, b),
            5 => self.lcs2_fixed::<5>(a, b),
            6 => self.lcs2_fixed::<6>(a, b),
            7 => self.lcs2_fixed::<7>(a, b),
            8 => self.lcs2_fixed::<8>(a, b),
            _ => (self.lcs_any(a), self.lcs_any(b)),
        }
    }

    fn row<const W: usize>(&self, t: u32) -> &[u64; W] {
        self.rows[t as usize * W..][..W].try_into().expect("row width")
    }

    fn lcs2_fixed<const W: usize>(&self, a: &[u32], b: &[u32]) -> (usize, usize) {
        let (mut va, mut vb) = ([!0u64; W], [!0u64; W]);
        let common = a.len().min(b.len());
        for (&ta, &tb) in a[..common].iter().zip(&b[..common]) {
            step(&mut va, self.row::<W>(ta));
            step(&mut vb, self.row::<W>(tb));
        }
        for &t in &a[common..] {
            step(&mut va, self.row::<W>(t));
        }
        for &t in &b[common..] {
            step(&mut vb, self.row::<W>(t));
        }
        (self.zeros(&va), self.zeros(&vb))
    }

    /// Fixed widths let the compiler keep the state in registers and unroll
    /// the carry chain.
    fn lcs_fixed<const W: usize>(&self, text: &[u32]) -> usize {
        let mut v = [!0u64; W];
        for &t in text {
            step(&mut v, self.row::<W>(t));
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

/// LCS length of two hashed token streams, without a group table.
pub fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let dense = Dense::new([a, b]);
    Pattern::new(&dense.streams[0], dense.vocab).lcs(&dense.streams[1])
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
        assert_eq!(toks("So the answer is THE sum"), toks("answer sum"));
        assert_ne!(toks("abcdefghij"), toks("abcdefghik"));
        assert!(toks("").is_empty());
    }

    /// Byte-at-a-time tokenizer: the reference for the block tokenizer.
    fn tokenize_reference(text: &str) -> Vec<u32> {
        let b = text.as_bytes();
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            if b[i..].starts_with(b"<<") {
                i = memchr::memmem::find(&b[i..], b">>").map_or(b.len(), |p| i + p + 2);
            } else if CLASS[usize::from(b[i])] & WORD != 0 {
                let start = i;
                while i < b.len()
                    && (CLASS[usize::from(b[i])] & WORD != 0
                        || (matches!(b[i], b'.' | b',')
                            && digit(i.wrapping_sub(1))
                            && digit(i + 1)
                            && !b[i + 1..].starts_with(b"<<")))
                {
                    i += 1;
                }
                let h = hash_without_commas(&b[start..i]);
                if i - start > MAX_STOPWORD_LEN || !stopwords().contains(h) {
                    out.push(h);
                }
            } else {
                if CLASS[usize::from(b[i])] & OPERATOR != 0 {
                    out.push(hash_word(b, i, i + 1));
                }
                i += 1;
            }
        }
        out.truncate(MAX_TOKENS);
        out
    }

    #[test]
    fn block_tokenizer_matches_reference() {
        let long_word = "x".repeat(150);
        let cases = [
            "Sold 1,000 apples at $3.50 each = 3,500.00 total; 7 x 8 = 56.".repeat(5),
            format!("a {long_word} 12,345,678.9 b"),
            "48/2 = <<48/2=24>>24 clips.<<bad".to_owned(),
            "ünïcödé 5×3 = 15 ÷ 3".to_owned(),
            "1.2.3,4,5 .5 5. ,5 x,1".repeat(9),
            String::new(),
        ];
        for text in cases {
            for cut in 0..text.len().min(70) {
                let t = &text[text.char_indices().map(|(i, _)| i).find(|&i| i >= cut).unwrap_or(0)..];
                assert_eq!(toks(t), tokenize_reference(t), "{t:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn block_tokenizer_matches_reference_on_noise(t in "([0-9]{1,3}|[.,]|[a-zA-Z]{1,70}|<<|>>|[-+*/=^% ]|é){0,120}") {
            proptest::prop_assert_eq!(toks(&t), tokenize_reference(&t));
        }
    }

    #[test]
    fn kernel_matches_reference() {
        let a: Vec<u32> = (0..300).map(|i| (i * 7 % 13) as u32).collect();
        let b: Vec<u32> = (0..250).map(|i| (i * 5 % 11) as u32).collect();
        let dense = Dense::new([a.as_slice(), b.as_slice()]);
        let pattern = Pattern::new(&dense.streams[0], dense.vocab);
        assert_eq!(pattern.lcs(&dense.streams[1]), lcs_reference(&a, &b));
        let short = &dense.streams[1][..100];
        let expected = (lcs_reference(&a, &b), lcs_reference(&a, &b[..100]));
        assert_eq!(pattern.lcs2(&dense.streams[1], short), expected);
        assert_eq!(pattern.lcs2(short, &dense.streams[1]), (expected.1, expected.0));
    }

    #[test]
    fn similarity_bounds() {
        let a = toks("she has 5 apples");
        let sim = |a: &[u32], b: &[u32]| combine(lcs_len(a, b), a.len(), b.len(), &[], &[]);
        assert_eq!(sim(&a, &a), 1.0);
        assert_eq!(sim(&a, &toks("zero overlap here")), 0.0);
        assert_eq!(sim(&[], &[]), 0.0);
        assert_eq!(combine(0, 0, 0, &[5], &[5]), 1.0);
        assert_eq!(multiset_dice(&[1, 2, 2], &[2, 2, 3]), 2.0 * 2.0 / 6.0);
    }
}
