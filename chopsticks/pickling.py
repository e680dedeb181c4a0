"""Pickling calls for the agent, including functions defined in ``__main__``. Controller-side.

Calls go down as pickles: the remote trusts its controller (results come back in msgpack,
see ``codec``). Functions from importable modules pickle by reference, as usual; modules
pickle as their name. A function or lambda whose ``__module__`` is ``__main__`` (a script,
an IPython or Jupyter session) cannot be found by name on the remote, so it is sent by
source: the segment that defines it, read with ``linecache`` (no source, as in the plain
``python`` REPL, is a clear error), plus the globals it uses, its closure and its defaults,
each pickled the same way. ``chopsticks.agent.mainfn`` rebuilds it on the remote.

On a controller that ``gevent.monkey`` patched, ``time.sleep`` is gevent's ``sleep`` (and so
on for every name it replaced), which the remote cannot import: what gevent put in a module
is sent as that module's name, and the remote uses its own original.
"""

import ast
import functools
import importlib
import io
import linecache
import pickle
import sys
import types
from typing import Any, Dict, Iterator, List, Optional, Tuple

from chopsticks.errors import SerializationError
from chopsticks.wire import mpack

PROTOCOL = 4  # every remote from Python 3.9 reads it


class _Namespace:
    """Stands for the remote globals shared by the ``__main__`` functions of one call."""


def _rebuild(name: str):
    module = importlib.import_module("chopsticks.agent.mainfn")
    return getattr(module, name)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


@functools.lru_cache(maxsize=512)
def _main_source(filename: str, firstline: int, name: str, is_lambda: bool, argnames: Tuple[str, ...]):
    """(segment, first line) of the def or lambda that starts at ``firstline`` in ``filename``."""
    text = "".join(linecache.getlines(filename))
    if not text:
        raise SerializationError(
            "cannot send %s defined in __main__: its source is not available (the plain Python REPL "
            "keeps none); define it in a module, a script, or an IPython/Jupyter session" % name)
    tree = ast.parse(text)
    candidates: List[ast.AST] = []
    for node in ast.walk(tree):
        if is_lambda and isinstance(node, ast.Lambda) and node.lineno == firstline:
            if tuple(a.arg for a in node.args.posonlyargs + node.args.args) == argnames:
                candidates.append(node)
        elif (not is_lambda and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and node.name == name):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if start == firstline:
                candidates.append(node)
    if len(candidates) != 1:
        raise SerializationError(
            "cannot send %s defined in __main__: %s on line %d of %s" % (
                name, "cannot tell which lambda is meant" if candidates else "its source was not found",
                firstline, filename))
    node = candidates[0]
    segment = ast.get_source_segment(text, node, padded=True)
    return segment, getattr(node, "lineno")


def monkey_patched() -> Dict[int, Tuple[str, str]]:
    """What ``gevent.monkey`` put in place of a module's attribute (by ``id``), and the
    ``(module, name)`` it stands for; empty when nothing is patched.

    Asked on every call, so the table is built once per state of ``gevent.monkey.saved``
    (patching only ever adds to it), not per call."""
    monkey = sys.modules.get("gevent.monkey")
    saved: Dict[str, Dict[str, Any]] = getattr(monkey, "saved", None) or {}
    if not saved:
        return {}
    return _patched_table(id(saved), tuple((module, len(names)) for module, names in saved.items()))


@functools.lru_cache(maxsize=4)
def _patched_table(saved_id: int, shape: Tuple[Tuple[str, int], ...]) -> Dict[int, Tuple[str, str]]:
    saved: Dict[str, Dict[str, Any]] = sys.modules["gevent.monkey"].saved  # type: ignore[attr-defined]
    table = {}
    for module_name, originals in saved.items():
        module = sys.modules.get(module_name)
        for name, original in originals.items():
            current = getattr(module, name, original)
            if current is not original:
                table[id(current)] = (module_name, name)
    return table


class CallPickler(pickle.Pickler):
    """A pickler that sends ``__main__`` functions by source, modules by name, and what
    ``gevent.monkey`` patched by the name it replaced (``patched``: ``monkey_patched()``)."""

    def __init__(self, file: io.BytesIO, patched: Optional[Dict[int, Tuple[str, str]]] = None):
        super().__init__(file, protocol=PROTOCOL)
        self._namespace = _Namespace()
        self._patched = monkey_patched() if patched is None else patched

    def reducer_override(self, obj: Any) -> Any:
        stands_for = self._patched.get(id(obj))
        if stands_for is not None:
            module_name, name = stands_for
            return getattr, (sys.modules[module_name], name)
        if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            return self._reduce_main_function(obj)
        if isinstance(obj, types.ModuleType):
            return importlib.import_module, (obj.__name__,)
        if obj is self._namespace:
            return _rebuild("new_namespace"), ()
        if isinstance(obj, type) and obj.__module__ == "__main__":
            raise SerializationError(
                "cannot send class %s defined in __main__: the remote cannot import it; "
                "move it into a module" % obj.__qualname__)
        return NotImplemented

    def _reduce_main_function(self, fn: types.FunctionType):
        code = fn.__code__
        # The code's own name: functools.wraps gives a wrapper its wrapped function's name.
        name = code.co_name
        is_lambda = name == "<lambda>"
        segment, firstline = _main_source(
            code.co_filename, code.co_firstlineno, name, is_lambda,
            code.co_varnames[:code.co_posonlyargcount + code.co_argcount])
        top_level = name == fn.__name__ == fn.__qualname__ and not code.co_freevars
        fn_globals = fn.__globals__
        used = {n: fn_globals[n] for n in sorted(set(_code_names(code))) if n in fn_globals}
        closure = {var: cell.cell_contents
                   for var, cell in zip(code.co_freevars, fn.__closure__ or ())
                   if _cell_is_set(cell)}
        state = {
            "globals": used,
            "closure": closure,
            "defaults": fn.__defaults__,
            "kwdefaults": fn.__kwdefaults__,
            "name": fn.__name__,
            "qualname": fn.__qualname__,
            "doc": fn.__doc__,
            "dict": dict(fn.__dict__),
        }
        args = (self._namespace, code.co_filename, firstline, segment, name, is_lambda,
                list(code.co_freevars), top_level)
        return _rebuild("rebuild"), args, state, None, None, _rebuild("set_state")


def _cell_is_set(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


_PLAIN_CALLABLES = (types.FunctionType, types.BuiltinFunctionType)
_SCALARS = frozenset((int, float, str, bytes, bool, type(None)))


def _dumps(obj: Any, patched: Optional[Dict[int, Tuple[str, str]]] = None) -> bytes:
    buf = io.BytesIO()
    CallPickler(buf, patched).dump(obj)
    return buf.getvalue()


def _plain(fn: Any, patched: Dict[int, Tuple[str, str]]) -> bool:
    """A plain function that goes by its module and name: not from ``__main__`` (sent by
    source), not something ``gevent.monkey`` put in a module (sent as what it replaced)."""
    return type(fn) in _PLAIN_CALLABLES and getattr(fn, "__module__", None) not in (None, "__main__") \
        and id(fn) not in patched


def named_call(fn: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[bytes]:
    """The call as msgpack ``[module, qualified name, args, kwargs]``, when it can go so: a
    plain function found by that name in its module (not ``__main__``, not something
    ``gevent.monkey`` put there), and arguments of msgpack's own exact types (no tuple, no
    subclass, ints of 64 bits, nested no deeper than the agent reads). None otherwise: the
    call is pickled. A fresh agent runs such a call without importing the unpickler (~5 ms of
    its start)."""
    if not _plain(fn, monkey_patched()):
        return None
    module_name = fn.__module__
    found: Any = sys.modules.get(module_name)
    for name in fn.__qualname__.split("."):
        found = getattr(found, name, None)
    if found is not fn:
        return None
    try:
        return mpack.packb([module_name, fn.__qualname__, list(args), kwargs], max_depth=mpack.READ_DEPTH)
    except (TypeError, ValueError):
        return None


def dumps_call(fn: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bytes:
    """Pickle a call; SerializationError names the part that cannot be sent."""
    if not callable(fn):
        raise SerializationError("cannot call %r: it is not callable" % (fn,))
    patched = monkey_patched()
    if (_plain(fn, patched) and all(type(a) in _SCALARS for a in args)
            and all(type(v) in _SCALARS for v in kwargs.values())):
        # Fast path, most calls: nothing here needs the custom pickler.
        try:
            return pickle.dumps((fn, args, kwargs), PROTOCOL)
        except Exception:
            pass
    try:
        return _dumps((fn, args, kwargs), patched)
    except SerializationError:
        raise
    except Exception as exc:
        culprit = _find_culprit(fn, args, kwargs)
        raise SerializationError("cannot send %s: %s" % (culprit, exc)) from exc


def _find_culprit(fn: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    parts: List[Tuple[str, Any]] = [("the function %r" % (fn,), fn)]
    parts += [("argument %d (%s)" % (i + 1, type(a).__name__), a) for i, a in enumerate(args)]
    parts += [("keyword argument %r (%s)" % (k, type(v).__name__), v) for k, v in kwargs.items()]
    for label, value in parts:
        try:
            _dumps(value)
        except Exception:
            return label
    return "the call"
