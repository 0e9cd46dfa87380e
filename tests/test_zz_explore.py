import os, re, collections
from tests.test_fuzz import fuzz, site  # noqa
def test_explore(site):
    found = fuzz(site, rounds=int(os.environ.get("R","2")), seed=int(os.environ.get("S","1")))
    print("SENT", found["sent"], "CHANGED", found["changed"])
    groups = collections.defaultdict(list)
    for e in found["errors"]:
        m = re.match(r"(\w+) (\w+) (\S+)", e)
        path = re.sub(r"\?.*", "", m.group(3))
        groups[(m.group(2), re.sub(r"/\d+", "/N", path)[:60])].append(e)
    for k, v in sorted(groups.items()):
        print("==", k, len(v))
        for e in v[:4]:
            print("   ", e[:400])
