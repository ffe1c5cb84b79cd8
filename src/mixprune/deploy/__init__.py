"""What a user deploys: model files (safetensors, sparse encodings, loaded without pickle), the one table of file
encodings, ONNX files verified in ONNX Runtime, timing, and the fingerprints that let models share work."""
