"""The embedded backends a stack on one machine runs beside the services:
llama.cpp's server for the local model, and SeaweedFS for S3. Launchers, not
services: `aios up`, the tests and the dev overlay's model server use them."""
