//! One solution parsed once: everything the pair kernel and the scores need,
//! so no text is read twice.

use crate::extract::{extract, Answer, Mode};
use crate::number::numbers;
use crate::similarity::{tokenize, value_key, MAX_TOKENS};
use crate::steps::{claims, Claim};

#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    pub answer: Option<Answer>,
    /// Hashed word ids of the step token stream.
    pub tokens: Vec<u32>,
    /// Sorted keys of the intermediate values (claim results; the numbers of
    /// the text when it states no claim).
    pub values: Vec<i64>,
    pub claims: Vec<Claim>,
}

impl Solution {
    pub fn parse(text: &str) -> Solution {
        let claims = claims(text);
        let mut values: Vec<i64> = if claims.is_empty() {
            numbers(text, true).take(MAX_TOKENS).map(|n| value_key(n.value)).collect()
        } else {
            claims.iter().map(|c| value_key(c.value())).collect()
        };
        values.sort_unstable();
        let mut tokens = Vec::with_capacity(text.len() / 5);
        tokenize(text, &mut tokens);
        Solution { answer: extract(text, Mode::Auto), tokens, values, claims }
    }

    pub fn answer_value(&self) -> Option<f64> {
        self.answer.as_ref().map(|a| a.value)
    }
}
