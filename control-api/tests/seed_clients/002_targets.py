import httpx
h = {"Authorization": "Bearer sk-sec-YOUR_KEY"}

# List
targets = httpx.get("https://securityscanner.dev/v1/targets", headers=h).json()

# Add
httpx.post("https://securityscanner.dev/v1/targets", headers=h,
           json={"host": "https://staging.myapp.com", "label": "staging"})
