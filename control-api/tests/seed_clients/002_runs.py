import httpx
runs = httpx.get(
    "https://securityscanner.dev/v1/runs",
    headers={"Authorization": "Bearer sk-sec-YOUR_KEY"},
).json()
for r in runs["runs"]:
    print(r["id"], r["target"], r["summary"]["total"])
