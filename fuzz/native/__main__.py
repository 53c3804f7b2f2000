from fuzz.native import build

print(build(force=True))
