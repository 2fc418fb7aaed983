# Sourced by the device scripts (gpu_study.sh, gpu_session.sh): the lent machine's setup, in one place.
# Inputs in .gpu/ (git-ignored; docs/perf-notes.md "Device setup"); /tmp lasts while the machine is warm.
G=/tmp/gg M=/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf

# The first call: GGUF half 1, its checksum and the data under $G; the carried wheels into /tmp/site
# (datasets 4.7 from whl_alt where the image's pyarrow is older than 24; whl_b, gguf, when carried).
device_setup() {
  mkdir -p $G && cp .gpu/gguf_a/* .gpu/gguf.sha256 $G/ && cp -r .gpu/data $G/ || return 1
  local arrow w wheels
  arrow=$(python3 -c 'import pyarrow; print(pyarrow.__version__.split(".")[0])')
  if [ "$arrow" -ge 24 ]; then wheels=(.gpu/whl/*.whl)
  else wheels=(.gpu/whl/trl-*.whl .gpu/whl/looper-*.whl .gpu/whl_alt/*.whl); fi
  for w in .gpu/whl_b/*.whl; do [ -f "$w" ] && wheels+=("$w"); done
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${wheels[@]}" || return 1
  rm -rf /tmp/site/looper_cli  # the wheel's copy: run the tree's looper_cli with the wheel's compiled core
}

# The GGUF from its halves whenever half 2 travels with this call, checked against its sha256.
join_gguf() {
  [ -f .gpu/gguf_b/smol.part01 ] || { [ -f $M ] && return 0; echo "no GGUF: carry .gpu/gguf_b" >&2; return 1; }
  cat $G/smol.part00 .gpu/gguf_b/smol.part01 > $M && echo "$(cut -d' ' -f1 $G/gguf.sha256)  $M" | sha256sum -c -
}
