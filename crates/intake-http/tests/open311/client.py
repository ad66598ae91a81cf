"""Drives Intake's Open311 door with clients that are not Intake's own.

GETs go through `georeport` (PyPI, an Open311 GeoReport v2 client library);
POSTs, which that library does not make, are sent with `requests` in the
shape FixMyStreet's Open311 sender uses (form-encoded, attribute[...] keys).
Both formats are exercised. Exit 0 when every check passes, 77 when the
Python packages are missing (the Rust test then says it skipped).
"""

import sys

try:
    import requests
    import xmltodict
    from georeport import GeoReport
except ImportError as e:  # pragma: no cover
    print(f"missing Python package: {e}")
    sys.exit(77)


def as_list(x):
    return x if isinstance(x, list) else [x]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(root, fmt):
    gr = GeoReport(root, api_key="test-key", output_format=fmt)

    services = as_list(gr.get_service_list())
    codes = [s["service_code"] for s in services]
    check("noise" in codes and "flood" in codes, f"{fmt}: services {codes}")
    flood = next(s for s in services if s["service_code"] == "flood")
    check("emergency" in (flood.get("keywords") or ""), f"{fmt}: flood not marked emergency: {flood}")
    noise = next(s for s in services if s["service_code"] == "noise")
    check("emergency" not in (noise.get("keywords") or ""), f"{fmt}: noise marked emergency")

    definition = gr.get_service_definition("noise")
    attrs = definition["attributes"]
    if fmt == "xml":
        attrs = as_list(attrs["attribute"])
    district = next(a for a in attrs if a["code"] == "district")
    values = district["values"] if fmt == "json" else as_list(district["values"]["value"])
    check(any(v["key"] == "110105" for v in values), f"{fmt}: district values {values}")

    # FixMyStreet's request shape: a point and an address, the reporter's
    # name and contact, and its own attributes.
    form = {
        "api_key": "test-key",
        "service_code": "noise",
        "lat": "39.909",
        "long": "116.461",
        "address_string": "Jianguomenwai Ave, Guomao",
        "description": f"Drilling at night ({fmt})",
        "email": "li.wei@example.cn",
        "first_name": "Li",
        "last_name": "Wei",
        "phone": "13800000000",
        "attribute[title]": "Night drilling",
        "attribute[report_url]": "http://fixmystreet.example/report/1",
        "attribute[fixmystreet_id]": f"1-{fmt}",
    }

    def post(data):
        r = requests.post(f"{root}/requests.{fmt}", data=data, timeout=30)
        if fmt == "json":
            body = r.json()
        else:
            body = xmltodict.parse(r.content)
        return r, body

    r, body = post(form)
    check(r.status_code in (200, 201), f"{fmt}: POST {r.status_code} {r.text}")
    if fmt == "json":
        sid = body[0]["service_request_id"]
    else:
        sid = body["service_requests"]["request"]["service_request_id"]
    check(sid, f"{fmt}: no service_request_id in {r.text}")

    # A retry of the same report (its answer lost) is the same request.
    r, body = post(form)
    again = body[0]["service_request_id"] if fmt == "json" else body["service_requests"]["request"]["service_request_id"]
    check(again == sid, f"{fmt}: retry made {again}, first {sid}")

    # attribute[district] alone places a report, no point needed.
    r, body = post({"api_key": "k", "service_code": "flood", "attribute[district]": "110108",
                    "description": f"Underpass flooded ({fmt})"})
    check(r.status_code in (200, 201), f"{fmt}: POST by district {r.status_code} {r.text}")
    sid2 = body[0]["service_request_id"] if fmt == "json" else body["service_requests"]["request"]["service_request_id"]

    one = gr.get_service_request(sid)
    check(one["service_request_id"] == sid, f"{fmt}: {one}")
    check(one["status"] == "open", f"{fmt}: status {one}")
    check(one["service_code"] == "noise", f"{fmt}: {one}")
    check(one["description"] == f"Drilling at night ({fmt})", f"{fmt}: {one}")
    check(one.get("status_notes"), f"{fmt}: no status_notes {one}")
    check("li.wei" not in str(one), f"{fmt}: contact leaked into a public look-up")

    many = as_list(gr.get_service_requests(service_request_id=f"{sid},{sid2},0-00000-0"))
    check([m["service_request_id"] for m in many] == [sid, sid2], f"{fmt}: {many}")

    # Errors are [{code, description}].
    r = requests.post(f"{root}/requests.{fmt}", data={"api_key": "k", "service_code": "noise",
                                                       "description": "nowhere"}, timeout=30)
    check(r.status_code == 400, f"{fmt}: no district -> {r.status_code}")
    if fmt == "json":
        err = r.json()[0]
    else:
        err = xmltodict.parse(r.content)["errors"]["error"]
    check(str(err["code"]) == "400" and "district" in err["description"], f"{fmt}: error {err}")

    r = requests.get(f"{root}/requests/0-00000-0.{fmt}", timeout=30)
    check(r.status_code == 404, f"{fmt}: unknown request -> {r.status_code} {r.text}")
    print(f"{fmt}: ok ({sid}, {sid2})")


def main():
    root = sys.argv[1]
    for fmt in ("json", "xml"):
        run(root, fmt)
    print("open311 client checks passed")


if __name__ == "__main__":
    main()
