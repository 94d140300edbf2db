curl https://your-scanner-domain/api/v1/scan/a1b2c3d4-e5f6-7890-abcd-ef1234567890 \
-H "Authorization: Bearer YOUR_API_TOKEN"
echo
# List first 10 scans
curl "https://your-scanner-domain/api/v1/scans?limit=10" \
-H "Authorization: Bearer YOUR_API_TOKEN"
echo
# Filter by target
curl "https://your-scanner-domain/api/v1/scans?target=192.168.1.1" \
-H "Authorization: Bearer YOUR_API_TOKEN"
echo
curl -X POST https://your-scanner-domain/api/v1/scan/a1b2c3d4-e5f6-7890-abcd-ef1234567890/retest \
-H "Authorization: Bearer YOUR_API_TOKEN"
