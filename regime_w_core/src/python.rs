use pyo3::prelude::*;

#[pymodule]
fn regime_w_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    Ok(())
}
