import httpx, time

API = "https://securityscanner.dev"
KEY = "sk-sec-YOUR_KEY"
HEADERS = {"Authorization": f"Bearer {KEY}"}

# 1. Trigger
r = httpx.post(f"{API}/v1/scan", headers=HEADERS,
               json={"host": "https://myapp.com"})
run_id = r.json()["run_id"]

# 2. Poll
while True:
    status = httpx.get(f"{API}/v1/scan/{run_id}", headers=HEADERS).json()
    if status["status"] == "completed":
        break
    time.sleep(10)

print(f"Found {status['summary']['total']} findings")
for f in status["findings"]:
    print(f"  [{f['severity']}] {f['title']}")

# 3. Fix file
fix = httpx.get(f"{API}/v1/scan/{run_id}/fix", headers=HEADERS).text
open("SECURITY-FIX.md", "w").write(fix)
