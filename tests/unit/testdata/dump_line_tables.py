"""Prints, for every code object compiled from a few stdlib modules, its line table and the line
the interpreter itself gives each instruction offset. py_code_test decodes the same tables with
threadscope's decoders and compares. Runs on CPython 3.6-3.13.

Output lines:  C <firstlineno> <table hex>   then   O <offset> <line or -1>  per instruction.
Offsets are in bytes up to 3.9 (f_lasti), in 2-byte code units from 3.10 on.
"""
import dis
import importlib
import sys

MODULES = ["threading", "queue", "json.decoder", "argparse", "asyncio.base_events"]


def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            for inner in walk(const):
                yield inner


def main():
    for name in MODULES:
        path = importlib.import_module(name).__file__
        with open(path, encoding="utf-8") as f:
            module_code = compile(f.read(), path, "exec")
        for code in walk(module_code):
            if sys.version_info >= (3, 10):
                table = code.co_linetable
                print("C %d %s" % (code.co_firstlineno, table.hex()))
                for start, end, line in code.co_lines():
                    for offset in range(start, end, 2):
                        print("O %d %d" % (offset // 2, -1 if line is None else line))
            else:
                print("C %d %s" % (code.co_firstlineno, code.co_lnotab.hex()))
                starts = list(dis.findlinestarts(code))
                for offset in range(0, len(code.co_code), 2):
                    line = code.co_firstlineno
                    for start, start_line in starts:
                        if start > offset:
                            break
                        line = start_line
                    print("O %d %d" % (offset, line))


main()
