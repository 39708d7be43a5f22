"""The module graph of a crate, from the `crate::` and `super::` paths in its non-test code: prints
each top-level module's dependencies and exits 1 if they form a cycle. Approximate (it reads
paths, not name resolution) but it needs nothing installed. Usage: module-cycles.py CRATE_DIR"""
import os, re, sys
root = sys.argv[1]
src = os.path.join(root, 'src')
edges = {}
def modpath(f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    if rel[-1] in ('lib', 'mod', 'main'): rel = rel[:-1]
    return rel
for dp, _, fs in os.walk(src):
    for fn in fs:
        if not fn.endswith('.rs') or fn == 'main.rs': continue
        f = os.path.join(dp, fn)
        mp = modpath(f)
        if not mp: continue
        text = open(f).read()
        text = text.split('#[cfg(test)]')[0]
        text = re.sub(r'//[^\n]*', '', text)
        a = mp[0]
        for m in re.finditer(r'\bcrate::([a-z_]+)', text):
            b = m.group(1)
            if b != a: edges.setdefault(a, set()).add(b)
        for m in re.finditer(r'\bsuper::([a-z_]+)', text):
            parent = mp[:-1]
            target = (parent + [m.group(1)])[0] if parent else m.group(1)
            if target != a: edges.setdefault(a, set()).add(target)
# cycles via DFS
found = set()
def dfs(n, stack):
    for m in edges.get(n, ()):
        if m in stack:
            cyc = stack[stack.index(m):] + [m]
            found.add(' -> '.join(cyc))
        elif len(stack) < 12:
            dfs(m, stack + [m])
for n in list(edges): dfs(n, [n])
for k in sorted(edges): print(k, '->', ', '.join(sorted(edges[k])))
print('CYCLES:', len(found))
for c in sorted(found)[:20]: print('  ', c)
sys.exit(1 if found else 0)
