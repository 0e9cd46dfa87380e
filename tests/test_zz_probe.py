import traceback
from tests.test_fuzz import site  # noqa
from webmap.auth import add_token
def test_probe(site):
    app = site["app"]
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with app.app_context():
        tok = add_token("probe", "admin")
    c = app.test_client()
    a, h = site["clients"]["admin"]
    reqs = [
        (c, "GET", "/plans", None, {"Authorization": f"Bearer {tok}"}),
        (a, "POST", "/api/plans", {"name": "minmax", "street": "420103001", "minimum": 3000, "maximum": 100}, h),
        (a, "POST", "/api/grid", {"minimum": 2**63, "maximum": 2**64, "community": "420103001001"}, h),
        (a, "POST", "/open311/v2/requests.json", -1, h),
        (a, "GET", "/api/rates?to=9999-12-31", None, h),
        (a, "POST", "/api/grid/moves", {"units": ["\ud800"], "to": "new"}, h),
        (a, "POST", "/api/plans/1/duplicate", {"name": "\ud800"}, h),
    ]
    for cl, m, u, body, hh in reqs:
        try:
            r = cl.open(u, method=m, json=body, headers=hh) if body is not None else cl.open(u, method=m, headers=hh)
            print("OK", u, r.status_code, r.get_data(as_text=True)[:200])
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)
            mine = [f"{f.filename.split('/scope/')[-1]}:{f.lineno} {f.line}" for f in tb if "/scope/" in f.filename and ".venv" not in f.filename]
            print("EXC", u, type(exc).__name__, str(exc)[:200])
            for x in mine[-4:]:
                print("     ", x)
