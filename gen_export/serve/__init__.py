"""After the export: the Triton repository writer (`triton`, `triton_models/`), the bundled server and load test,
Kubernetes manifests (`deploy`) and object-store upload."""
