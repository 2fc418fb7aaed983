import json, sys, time, torch
sys.path.insert(0, "/work/main")
from looper_cli.data import load_problems
from looper_cli.models import load_base_model, load_tokenizer
from looper_cli.prompts import build_prompt
from looper_cli.engine.api import SamplingConfig, EngineConfig, make_generator
torch.set_num_threads(2)
tok = load_tokenizer("/tmp/smol.gguf")
model = load_base_model("/tmp/smol.gguf", "cpu")
probs = load_problems("/work/shared/data/gsm8k", split="train", limit=int(sys.argv[1]), seed=0)
prompts = [build_prompt(tok, p.question, "chat") for p in probs]
gen = make_generator(model, tok, "fast", EngineConfig(max_seqs=64))
t = time.time()
out = gen.generate(prompts, SamplingConfig(max_new_tokens=256, temperature=0.8, samples=8, seed=int(sys.argv[2])))
print("s", time.time() - t, file=sys.stderr)
with open(sys.argv[3], "w") as f:
    for p, group in zip(prompts, out):
        pid = tok(p, add_special_tokens=False)["input_ids"]
        for c in group:
            f.write(json.dumps(dict(prompt_ids=pid, ids=c.token_ids, finished=c.finished)) + "\n")
