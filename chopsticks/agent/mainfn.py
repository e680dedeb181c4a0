"""Rebuild functions and lambdas defined in the controller's ``__main__``. Remote-safe.

The controller cannot pickle such a function by reference (the remote's ``__main__`` is
the agent), so it sends the function's source segment, the line it started on, its
closure variables' names, and, as pickle state applied after the function exists, the
globals it uses, its closure values and its defaults (so recursive and mutually recursive
functions work). Here the segment is parsed, stripped of decorators, default values and
annotations (those are evaluated on the controller, not re-evaluated here), compiled at
its original line numbers and executed in a namespace shared by every ``__main__``
function of the same call, like a module's globals.
"""

import ast
import linecache
import textwrap


def new_namespace():
    """The globals of the rebuilt ``__main__`` functions of one call."""
    return {"__name__": "__main__", "__builtins__": __builtins__}


def _strip(node):
    args = node.args
    args.defaults = []
    args.kw_defaults = [None] * len(args.kwonlyargs)
    if isinstance(node, ast.Lambda):
        return
    node.decorator_list = []
    node.returns = None
    for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
        if arg is not None:
            arg.annotation = None


def _remember_source(filename, firstline, source):
    """Put the segment's lines into linecache so remote tracebacks show them."""
    entry = linecache.cache.get(filename)
    lines = list(entry[2]) if entry and entry[1] is None else []
    new = source.splitlines(True)
    need = firstline - 1 + len(new)
    if len(lines) < need:
        lines.extend(["\n"] * (need - len(lines)))
    lines[firstline - 1:need] = new
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _place(node, first, last):
    node.lineno, node.col_offset, node.end_lineno, node.end_col_offset = first, 0, last, 0
    return node


def rebuild(ns, filename, firstline, source, name, is_lambda, freevars, top_level):
    """Create the function from its source segment; its state is applied by ``set_state``."""
    _remember_source(filename, firstline, source)
    tree = ast.parse(textwrap.dedent(source))
    ast.increment_lineno(tree, firstline - 1)
    last = max(getattr(n, "end_lineno", None) or firstline for n in ast.walk(tree))
    node = tree.body[0].value if is_lambda else tree.body[0]
    _strip(node)
    result = "__chopsticks_result__"
    body = [node]
    if is_lambda:
        target = _place(ast.Name(id=result, ctx=ast.Store()), firstline, last)
        body = [_place(ast.Assign(targets=[target], value=node), firstline, last)]
    if top_level and not freevars:
        module = ast.Module(body=body, type_ignores=[])
    else:
        made = _place(ast.Name(id=result if is_lambda else name, ctx=ast.Load()), last, last)
        body.append(_place(ast.Return(value=made), last, last))
        maker = ast.parse("def __chopsticks_make__(%s): pass" % ", ".join(freevars)).body[0]
        for sub in ast.walk(maker):
            if hasattr(sub, "lineno"):
                _place(sub, firstline, firstline)
        maker.body = body
        module = ast.Module(body=[_place(maker, firstline, last)], type_ignores=[])
    exec(compile(module, filename, "exec", dont_inherit=True), ns)
    if top_level and not freevars:
        return ns.pop(result) if is_lambda else ns[name]
    return ns.pop("__chopsticks_make__")(*[None] * len(freevars))


def set_state(fn, state):
    """Fill in what may refer back to the function itself: globals, closure, defaults."""
    fn.__globals__.update(state["globals"])
    closure = state["closure"]
    for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        if var in closure:
            cell.cell_contents = closure[var]
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__name__ = state["name"]
    fn.__qualname__ = state["qualname"]
    fn.__doc__ = state["doc"]
    fn.__dict__.update(state["dict"])
    return fn
