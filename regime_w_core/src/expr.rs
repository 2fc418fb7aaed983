//! Our own arithmetic evaluator for claims: `+ - * / x × ÷ ^ %` and
//! parentheses. Nothing is ever handed to a language's `eval`.
//!
//! An expression compiles to postfix code over numbered leaves, so the
//! counterfactual pass can re-run it with perturbed leaves without parsing
//! again. Parsing is bounded (length and nesting), evaluation is a loop over
//! f64: no input can panic, overflow the stack or hang.

use crate::number::parse_unsigned;

/// Deepest nesting of parentheses, signs and powers accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest expression text accepted, in bytes.
pub const MAX_LEN: usize = 512;

/// LaTeX operators that models write between numbers (`48 \times 2`); claim
/// scanning (`steps`) walks left over the same commands.
pub const LATEX_OPS: [(&[u8], Op); 3] = [(b"\\times", Op::Mul), (b"\\cdot", Op::Mul), (b"\\div", Op::Div)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Push leaf number `n`.
    Leaf(u16),
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Neg,
    /// Postfix `%`: divide by 100.
    Percent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// The numbers as written, in order.
    pub leaves: Vec<f64>,
    pub code: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    TooLong,
    TooDeep,
    Syntax,
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ParseError> {
        if text.len() > MAX_LEN {
            return Err(ParseError::TooLong);
        }
        let mut p = Parser { b: text.as_bytes(), i: 0, depth: 0, out: Expr { leaves: vec![], code: vec![] } };
        p.sum()?;
        p.skip_space();
        if p.i != p.b.len() || p.out.leaves.is_empty() {
            return Err(ParseError::Syntax);
        }
        Ok(p.out)
    }

    /// Value with the written leaves; `None` for division by zero or a
    /// non-finite result.
    pub fn eval(&self) -> Option<f64> {
        self.eval_with(&self.leaves)
    }

    /// Value with other leaf values (same count as `self.leaves`).
    pub fn eval_with(&self, leaves: &[f64]) -> Option<f64> {
        // The stack never holds more values than there are leaves; claims are
        // short, so it lives on the machine stack.
        let mut small = [0.0f64; 32];
        let mut big = Vec::new();
        let stack: &mut [f64] = if self.leaves.len() <= small.len() {
            &mut small
        } else {
            big.resize(self.leaves.len(), 0.0);
            &mut big
        };
        let mut n = 0usize;
        for &op in &self.code {
            let v = match op {
                Op::Leaf(i) => *leaves.get(usize::from(i))?,
                Op::Neg => -stack[n.checked_sub(1)?],
                Op::Percent => stack[n.checked_sub(1)?] / 100.0,
                _ => {
                    let r = stack[n.checked_sub(1)?];
                    let l = stack[n.checked_sub(2)?];
                    n -= 2;
                    binary(op, l, r)?
                }
            };
            if !v.is_finite() {
                return None;
            }
            if matches!(op, Op::Neg | Op::Percent) {
                n -= 1;
            }
            *stack.get_mut(n)? = v;
            n += 1;
        }
        (n == 1).then(|| stack[0])
    }
}

fn binary(op: Op, l: f64, r: f64) -> Option<f64> {
    match op {
        Op::Add => Some(l + r),
        Op::Sub => Some(l - r),
        Op::Mul => Some(l * r),
        Op::Div if r == 0.0 => None,
        Op::Div => Some(l / r),
        // powf saturates to inf (rejected by the caller) instead of looping.
        Op::Pow => Some(l.powf(r)),
        _ => None,
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
    out: Expr,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'$') {
            self.i += 1;
        }
    }

    /// The next operator among `ops` (as bytes or UTF-8 sequences).
    fn eat(&mut self, ops: &[(&[u8], Op)]) -> Option<Op> {
        self.skip_space();
        let rest = &self.b[self.i..];
        let &(tok, op) = ops.iter().find(|(t, _)| rest.starts_with(t))?;
        self.i += tok.len();
        Some(op)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::TooDeep);
        }
        Ok(())
    }

    fn sum(&mut self) -> Result<(), ParseError> {
        self.product()?;
        while let Some(op) = self.eat(&[(b"+", Op::Add), (b"-", Op::Sub)]) {
            self.product()?;
            self.out.code.push(op);
        }
        Ok(())
    }

    fn product(&mut self) -> Result<(), ParseError> {
        // `**` is listed before `*` so it reads as a power.
        const OPS: [(&[u8], Op); 7] = [
            (b"**", Op::Pow),
            (b"*", Op::Mul),
            (b"/", Op::Div),
            (b"x", Op::Mul),
            (b"X", Op::Mul),
            ("×".as_bytes(), Op::Mul),
            ("÷".as_bytes(), Op::Div),
        ];
        self.unary()?;
        while let Some(op) = self.eat(&OPS).or_else(|| self.eat(&LATEX_OPS)) {
            self.unary()?;
            self.out.code.push(op);
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        if self.eat(&[(b"-", Op::Neg)]).is_some() {
            self.unary()?;
            self.out.code.push(Op::Neg);
        } else {
            self.eat(&[(b"+", Op::Add)]);
            self.power()?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// `^` is right-associative and binds tighter than a sign on its left.
    fn power(&mut self) -> Result<(), ParseError> {
        self.postfix()?;
        if self.eat(&[(b"^", Op::Pow)]).is_some() {
            self.unary()?;
            self.out.code.push(Op::Pow);
        }
        Ok(())
    }

    fn postfix(&mut self) -> Result<(), ParseError> {
        self.primary()?;
        while self.eat(&[(b"%", Op::Percent)]).is_some() {
            self.out.code.push(Op::Percent);
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<(), ParseError> {
        self.skip_space();
        if self.b.get(self.i) == Some(&b'(') {
            self.enter()?;
            self.i += 1;
            self.sum()?;
            self.skip_space();
            if self.b.get(self.i) != Some(&b')') {
                return Err(ParseError::Syntax);
            }
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let (end, value) = parse_unsigned(self.b, self.i).ok_or(ParseError::Syntax)?;
        let leaf = u16::try_from(self.out.leaves.len()).map_err(|_| ParseError::TooLong)?;
        self.out.leaves.push(value);
        self.out.code.push(Op::Leaf(leaf));
        self.i = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str) -> Option<f64> {
        Expr::parse(t).ok()?.eval()
    }

    #[test]
    fn arithmetic() {
        assert_eq!(ev("48/2"), Some(24.0));
        assert_eq!(ev("0.2 x 50"), Some(10.0));
        assert_eq!(ev("(5 + 3) × 2"), Some(16.0));
        assert_eq!(ev("12 ÷ 4 - 1"), Some(2.0));
        assert_eq!(ev("2^3^2"), Some(512.0));
        assert_eq!(ev("-2^2"), Some(-4.0));
        assert_eq!(ev("20% * 50"), Some(10.0));
        assert_eq!(ev("$1,200 - $200"), Some(1000.0));
        assert_eq!(ev("2**3"), Some(8.0));
        assert_eq!(ev("12 \\div 4 \\times 2"), Some(6.0));
        assert_eq!(ev("10 - 2 - 3"), Some(5.0));
    }

    #[test]
    fn rejects_without_panicking() {
        assert_eq!(ev("1/0"), None);
        assert_eq!(ev("9^9^9^9"), None);
        assert_eq!(ev("(1"), None);
        assert_eq!(ev(""), None);
        assert_eq!(ev("2 +"), None);
        assert_eq!(ev("abc"), None);
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(Expr::parse(&deep), Err(ParseError::TooLong));
        let nested = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(Expr::parse(&nested), Err(ParseError::TooDeep));
        assert_eq!(Expr::parse(&"-".repeat(400)), Err(ParseError::TooDeep));
    }

    #[test]
    fn reevaluates_with_new_leaves() {
        let e = Expr::parse("48 + 48/2").unwrap();
        assert_eq!(e.eval_with(&[10.0, 48.0, 2.0]), Some(34.0));
    }
}
