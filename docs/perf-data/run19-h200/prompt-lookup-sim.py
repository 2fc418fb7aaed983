import json, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f)]
def draft(ctx, k, nmax, nmin=1):
    for n in range(nmax, nmin - 1, -1):
        if len(ctx) < n + 1: continue
        tail = ctx[-n:]
        for i in range(len(ctx) - n - 1, -1, -1):
            if ctx[i:i + n] == tail:
                return ctx[i + n:i + n + k]
    return []
def steps(row, k, nmax, nmin):
    ctx, gen = list(row["prompt_ids"]), row["ids"]
    g, s = 0, 0
    while g < len(gen):
        d = draft(ctx + gen[:g], k, nmax, nmin) if k else []
        a = 0
        while a < len(d) and g + a < len(gen) and d[a] == gen[g + a]: a += 1
        g += a + 1; s += 1
    return s
L = [len(r["ids"]) for r in rows]
print("rows", len(rows), "mean len", sum(L)/len(L), "max", max(L), "capped", sum(not r["finished"] for r in rows))
for k in (0, 2, 3, 4, 6, 8):
    for nmax, nmin in ((3, 1), (3, 2), (4, 2)):
        st = [steps(r, k, nmax, nmin) for r in rows]
        # batches of 64 rows (one ppo step)
        B = [max(st[i:i + 64]) for i in range(0, len(st), 64)]
        print(f"k={k} n={nmax}..{nmin}: mean row steps {sum(st)/len(st):.1f}, tokens/step {sum(L)/sum(st):.2f}, batch steps {B}")
        if k == 0: break
