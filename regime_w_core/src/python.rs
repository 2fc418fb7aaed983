//! The thin PyO3 face of the core: argument conversion, GIL release around
//! batch work, NumPy arrays handed over without copies. No scoring logic.

use std::borrow::Cow;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::arms::{ARMS, ARM_NAMES, N_ARMS};
use crate::bandit::Bandit;
use crate::batch::{self, Group};
use crate::error::Error;
use crate::extract::{self, Mode};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Core errors become Python exceptions here and only here.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        if e.is_type_error() {
            PyTypeError::new_err(e.to_string())
        } else {
            PyValueError::new_err(e.to_string())
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// Appends the items of a sequence of `str` to `out`, checked one by one.
/// A bare `str` is refused: iterating it would silently score its
/// characters. `what` names the sequence in errors, built only on error.
fn strings<'py>(
    seq: &Bound<'py, PyAny>,
    what: &dyn Fn() -> String,
    out: &mut Vec<Bound<'py, PyString>>,
) -> PyResult<()> {
    if seq.is_instance_of::<PyString>() || seq.is_instance_of::<PyBytes>() {
        let what = format!("{} must be a sequence of str, not a single {}", what(), type_name(seq));
        return Err(Error::NotAString { what }.into());
    }
    let iter = seq.try_iter().map_err(|_| Error::NotAString {
        what: format!("{} must be a sequence of str, got {}", what(), type_name(seq)),
    })?;
    for (i, item) in iter.enumerate() {
        let item = item?.cast_into::<PyString>().map_err(|e| {
            let got = type_name(e.into_inner().as_any());
            Error::NotAString { what: format!("{}[{i}] must be str, got {got}", what()) }
        })?;
        out.push(item);
    }
    Ok(())
}

/// Borrowed UTF-8 views (no copy for ordinary strings; lone surrogates are
/// replaced rather than refused).
fn views<'a>(strs: &'a [Bound<'_, PyString>]) -> Vec<Cow<'a, str>> {
    strs.iter().map(|s| s.to_cow().unwrap_or_else(|_| s.to_string_lossy())).collect()
}

fn mode(m: &str) -> Result<Mode, Error> {
    m.parse()
}

/// A final answer extracted from a solution text.
#[pyclass(frozen, module = "regime_w_core", name = "Answer")]
#[derive(Clone)]
struct PyAnswer {
    #[pyo3(get)]
    value: f64,
    #[pyo3(get)]
    text: String,
    #[pyo3(get)]
    flexible: bool,
}

#[pymethods]
impl PyAnswer {
    fn __repr__(&self) -> String {
        let flexible = if self.flexible { "True" } else { "False" };
        format!("Answer(value={}, text={:?}, flexible={flexible})", self.value, self.text)
    }
}

impl From<extract::Answer> for PyAnswer {
    fn from(a: extract::Answer) -> Self {
        PyAnswer { value: a.value, text: a.text, flexible: a.flexible }
    }
}

#[pyfunction]
#[pyo3(signature = (text, mode = "auto"))]
fn extract_answer(text: &Bound<'_, PyAny>, mode: &str) -> PyResult<Option<PyAnswer>> {
    let mode = self::mode(mode)?;
    let text: Cow<'_, str> = if let Ok(s) = text.cast::<PyString>() {
        Cow::Owned(s.to_string_lossy().into_owned())
    } else if let Ok(b) = text.cast::<PyBytes>() {
        Cow::Owned(String::from_utf8_lossy(b.as_bytes()).into_owned())
    } else {
        return Err(Error::NotAString { what: format!("text must be str or bytes, got {}", type_name(text)) }.into());
    };
    Ok(extract::extract(&text, mode).map(PyAnswer::from))
}

#[pyfunction]
#[pyo3(signature = (texts, mode = "auto"))]
fn extract_answers(py: Python<'_>, texts: &Bound<'_, PyAny>, mode: &str) -> PyResult<Vec<Option<PyAnswer>>> {
    let mode = self::mode(mode)?;
    let mut strs = Vec::new();
    strings(texts, &|| "texts".to_owned(), &mut strs)?;
    let views = views(&strs);
    let answers = py.detach(|| batch::on_pool(|| batch::extract_many(&views, mode)));
    Ok(answers.into_iter().map(|a| a.map(PyAnswer::from)).collect())
}

#[pyfunction]
fn answers_equal(a: Option<f64>, b: Option<f64>) -> bool {
    extract::answers_equal(a, b)
}

/// Scores of a batch of groups; arrays are per solution unless named group_*.
#[pyclass(frozen, module = "regime_w_core", name = "BatchScores")]
struct PyBatchScores {
    #[pyo3(get)]
    n_groups: usize,
    #[pyo3(get)]
    n_solutions: usize,
    #[pyo3(get)]
    offsets: Py<PyArray1<i64>>,
    #[pyo3(get)]
    answer: Py<PyArray1<f64>>,
    #[pyo3(get)]
    answer_flexible: Py<PyArray1<bool>>,
    #[pyo3(get)]
    correct: Py<PyArray1<i8>>,
    #[pyo3(get)]
    s_end: Py<PyArray1<f64>>,
    #[pyo3(get)]
    s_path: Py<PyArray1<f64>>,
    #[pyo3(get)]
    s_cf: Py<PyArray1<f64>>,
    #[pyo3(get)]
    arm_scores: Py<PyArray2<f64>>,
    #[pyo3(get)]
    group_s_end: Py<PyArray1<f64>>,
    #[pyo3(get)]
    group_arm_auc: Py<PyArray2<f64>>,
}

#[pymethods]
impl PyBatchScores {
    fn __repr__(&self) -> String {
        format!("BatchScores(n_groups={}, n_solutions={})", self.n_groups, self.n_solutions)
    }
}

/// (rows, 8) view of a flat row-major buffer, without a copy.
fn matrix(py: Python<'_>, flat: Vec<f64>) -> PyResult<Py<PyArray2<f64>>> {
    let rows = flat.len() / N_ARMS;
    Ok(flat.into_pyarray(py).reshape([rows, N_ARMS])?.unbind())
}

impl PyBatchScores {
    fn new(py: Python<'_>, s: batch::BatchScores) -> PyResult<Self> {
        Ok(PyBatchScores {
            n_groups: s.group_s_end.len(),
            n_solutions: s.answer.len(),
            offsets: s.offsets.into_pyarray(py).unbind(),
            answer: s.answer.into_pyarray(py).unbind(),
            answer_flexible: s.answer_flexible.into_pyarray(py).unbind(),
            correct: s.correct.into_pyarray(py).unbind(),
            s_end: s.s_end.into_pyarray(py).unbind(),
            s_path: s.s_path.into_pyarray(py).unbind(),
            s_cf: s.s_cf.into_pyarray(py).unbind(),
            arm_scores: matrix(py, s.arm_scores)?,
            group_s_end: s.group_s_end.into_pyarray(py).unbind(),
            group_arm_auc: matrix(py, s.group_arm_auc)?,
        })
    }
}

/// A gold answer: a number, a text the extractor reads, or None.
fn gold(item: &Bound<'_, PyAny>, i: usize) -> PyResult<Option<f64>> {
    if item.is_none() {
        return Ok(None);
    }
    if let Ok(s) = item.cast::<PyString>() {
        return Ok(extract::extract(&s.to_string_lossy(), Mode::Auto).map(|a| a.value));
    }
    item.extract::<f64>().map(Some).map_err(|_| {
        Error::NotAString { what: format!("golds[{i}] must be a number, a str or None, got {}", type_name(item)) }
            .into()
    })
}

/// Items of an optional per-group sequence, checked against the group count.
fn per_group<'py>(
    seq: Option<&Bound<'py, PyAny>>,
    what: &'static str,
    n: usize,
) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
    let Some(seq) = seq.filter(|s| !s.is_none()) else { return Ok(None) };
    if seq.is_instance_of::<PyString>() {
        return Err(Error::NotAString { what: format!("{what} must be a sequence, not a str") }.into());
    }
    let items: Vec<Bound<'py, PyAny>> = seq.try_iter()?.collect::<PyResult<_>>()?;
    if items.len() != n {
        return Err(Error::LengthMismatch { what, expected: n, got: items.len() }.into());
    }
    Ok(Some(items))
}

#[pyfunction]
#[pyo3(signature = (groups, golds = None, questions = None))]
fn score_groups(
    py: Python<'_>,
    groups: &Bound<'_, PyAny>,
    golds: Option<&Bound<'_, PyAny>>,
    questions: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyBatchScores> {
    if groups.is_instance_of::<PyString>() {
        return Err(
            Error::NotAString { what: "groups must be a sequence of sequences of str, not a str".into() }.into()
        );
    }
    let mut strs = Vec::new();
    let mut offsets = vec![0usize];
    for (g, group) in groups.try_iter()?.enumerate() {
        strings(&group?, &|| format!("groups[{g}]"), &mut strs)?;
        offsets.push(strs.len());
    }
    let n = offsets.len() - 1;
    let golds: Vec<Option<f64>> = match per_group(golds, "golds", n)? {
        Some(items) => items.iter().enumerate().map(|(i, x)| gold(x, i)).collect::<PyResult<_>>()?,
        None => vec![None; n],
    };
    let questions: Vec<Option<Bound<'_, PyString>>> = match per_group(questions, "questions", n)? {
        Some(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                if q.is_none() {
                    return Ok(None);
                }
                q.cast_into::<PyString>().map(Some).map_err(|e| {
                    let got = type_name(e.into_inner().as_any());
                    Error::NotAString { what: format!("questions[{i}] must be str or None, got {got}") }.into()
                })
            })
            .collect::<PyResult<_>>()?,
        None => vec![None; n],
    };
    let texts = views(&strs);
    let question_texts: Vec<Option<Cow<'_, str>>> =
        questions.iter().map(|q| q.as_ref().map(|s| s.to_string_lossy())).collect();
    let batch: Vec<Group<'_, Cow<'_, str>>> = (0..n)
        .map(|g| Group {
            solutions: &texts[offsets[g]..offsets[g + 1]],
            gold: golds[g],
            question: question_texts[g].as_deref(),
        })
        .collect();
    let scores = py.detach(|| batch::on_pool(|| batch::score_batch(&batch)))?;
    PyBatchScores::new(py, scores)
}

#[pyfunction]
#[pyo3(signature = (texts, pairs = None))]
fn pairwise_similarity<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    pairs: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut strs = Vec::new();
    strings(texts, &|| "texts".to_owned(), &mut strs)?;
    let views = views(&strs);
    let n = views.len();
    let Some(pairs) = pairs.filter(|p| !p.is_none()) else {
        let m = py.detach(|| batch::on_pool(|| batch::similarity_matrix(&views)));
        return Ok(m.into_pyarray(py).reshape([n, n])?.into_any());
    };
    // Any integer array-like is accepted; NumPy does the conversion. Floats,
    // bools and strings are refused, not truncated into other indices.
    let pairs = py.import("numpy")?.call_method1("asarray", (pairs,))?;
    let kind: String = pairs.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = pairs.getattr("size")?.extract()?;
    if size > 0 && kind != "i" && kind != "u" {
        return Err(PyValueError::new_err("pairs must hold integer indices"));
    }
    let pairs = pairs.call_method1("astype", ("int64",))?;
    let pairs: PyReadonlyArray2<'py, i64> =
        pairs.extract().map_err(|_| PyValueError::new_err("pairs must be a 2-d array of index pairs, shape (P, 2)"))?;
    let shape = pairs.shape();
    if shape[1] != 2 {
        return Err(PyValueError::new_err(format!("pairs must have shape (P, 2), got ({}, {})", shape[0], shape[1])));
    }
    let idx: Vec<(i64, i64)> = pairs.as_array().rows().into_iter().map(|r| (r[0], r[1])).collect();
    let sims = py.detach(|| batch::on_pool(|| batch::pairwise(&views, &idx)))?;
    Ok(sims.into_pyarray(py).into_any())
}

/// The most groups one `Bandit.choose` call draws arms for (80 MB of result).
const MAX_CHOOSE_GROUPS: usize = 10_000_000;

/// (arm index per solution, s_wm per solution).
type Assignment<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>);

/// Seeded Thompson sampling over the eight arms (Beta posteriors).
#[pyclass(module = "regime_w_core", name = "Bandit")]
struct PyBandit {
    inner: Bandit,
}

#[pymethods]
impl PyBandit {
    #[new]
    #[pyo3(signature = (seed = 0, prior_alpha = 1.0, prior_beta = 1.0))]
    fn new(seed: u64, prior_alpha: f64, prior_beta: f64) -> PyResult<Self> {
        Ok(PyBandit { inner: Bandit::new(seed, prior_alpha, prior_beta)? })
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed
    }

    #[getter]
    fn alpha<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.alpha.to_vec().into_pyarray(py)
    }

    #[getter]
    fn beta<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.beta.to_vec().into_pyarray(py)
    }

    #[getter]
    fn posterior_mean<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.posterior_mean().to_vec().into_pyarray(py)
    }

    #[getter]
    fn n_updates(&self) -> u64 {
        self.inner.n_updates
    }

    fn best_arm(&self) -> usize {
        self.inner.best_arm()
    }

    /// At most MAX_CHOOSE_GROUPS per call: a larger request (10**12 from a
    /// typo) would allocate without bound and ignore Ctrl-C until it failed.
    fn choose<'py>(&mut self, py: Python<'py>, n_groups: usize) -> PyResult<Bound<'py, PyArray1<i64>>> {
        if n_groups > MAX_CHOOSE_GROUPS {
            return Err(PyValueError::new_err(format!(
                "n_groups must be at most {MAX_CHOOSE_GROUPS} per call, got {n_groups}"
            )));
        }
        Ok(self.inner.choose(n_groups).into_iter().map(|a| a as i64).collect::<Vec<_>>().into_pyarray(py))
    }

    #[pyo3(signature = (scores, explore = true))]
    fn assign<'py>(&mut self, py: Python<'py>, scores: &PyBatchScores, explore: bool) -> PyResult<Assignment<'py>> {
        let offsets = scores.offsets.bind(py).readonly();
        let arm_scores = scores.arm_scores.bind(py).readonly();
        let (offsets, arm_scores) = (offsets.as_slice()?, arm_scores.as_slice()?);
        let mut arms = Vec::with_capacity(scores.n_solutions);
        let mut s_wm = Vec::with_capacity(scores.n_solutions);
        for w in offsets.windows(2) {
            let arm = if explore { self.inner.sample_arm() } else { self.inner.best_arm() };
            for i in w[0] as usize..w[1] as usize {
                arms.push(arm as i64);
                s_wm.push(arm_scores[i * N_ARMS + arm]);
            }
        }
        Ok((arms.into_pyarray(py), s_wm.into_pyarray(py)))
    }

    fn update(&mut self, py: Python<'_>, scores: &PyBatchScores) -> PyResult<usize> {
        let auc = scores.group_arm_auc.bind(py).readonly();
        Ok(self.inner.update(auc.as_slice()?))
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        Ok(PyBandit { inner: Bandit::from_json(text)? })
    }

    fn __repr__(&self) -> String {
        format!(
            "Bandit(seed={}, n_updates={}, best_arm={})",
            self.inner.seed,
            self.inner.n_updates,
            self.inner.best_arm()
        )
    }
}

/// At-fork hook: the child must not use the parent's rayon pool.
#[pyfunction]
fn _after_fork_in_child() {
    batch::mark_forked();
}

#[pymodule]
fn regime_w_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_after_fork_in_child, m)?;
    let kwargs = pyo3::types::PyDict::new(m.py());
    kwargs.set_item("after_in_child", hook)?;
    m.py().import("os")?.getattr("register_at_fork")?.call((), Some(&kwargs))?;
    m.add("__version__", crate::VERSION)?;
    m.add("ARMS", ARMS.to_vec())?;
    m.add("ARM_NAMES", ARM_NAMES.to_vec())?;
    m.add_class::<PyAnswer>()?;
    m.add_class::<PyBatchScores>()?;
    m.add_class::<PyBandit>()?;
    m.add_function(wrap_pyfunction!(extract_answer, m)?)?;
    m.add_function(wrap_pyfunction!(extract_answers, m)?)?;
    m.add_function(wrap_pyfunction!(answers_equal, m)?)?;
    m.add_function(wrap_pyfunction!(score_groups, m)?)?;
    m.add_function(wrap_pyfunction!(pairwise_similarity, m)?)?;
    // The stub's `ExtractMode` alias also exists at runtime, for annotations
    // evaluated by tools such as pydantic or typer.
    // Spelled as a Union of Literals, which is what the stub's alias means.
    let typing = m.py().import("typing")?;
    let literal = typing.getattr("Literal")?;
    let modes =
        ["auto", "strict", "flexible"].map(|s| literal.get_item(s)).into_iter().collect::<PyResult<Vec<_>>>()?;
    m.add("ExtractMode", typing.getattr("Union")?.get_item(pyo3::types::PyTuple::new(m.py(), modes)?)?)?;
    let all = [
        "ARMS",
        "ARM_NAMES",
        "Answer",
        "BatchScores",
        "Bandit",
        "ExtractMode",
        "answers_equal",
        "extract_answer",
        "extract_answers",
        "pairwise_similarity",
        "score_groups",
        "__version__",
    ];
    m.add("__all__", all.to_vec())?;
    Ok(())
}
