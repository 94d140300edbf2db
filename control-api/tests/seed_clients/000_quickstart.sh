# Start a fast scan
curl -X POST https://api.portscan.com/v1/fast
# Poll for results
curl https://api.portscan.com/v1/fast
