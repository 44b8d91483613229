"""What the tests stand on, one concern a module: free ports (`ports`), waiting with a deadline
(`waiting`), app servers (`servers`), Caddy (`caddy`), companions (`companion`), Caddy sites and
admin reads the module's tests share (`sites`), bounded load (`load`), hostile clients
(`hostile`), an HTTP/2 client (`h2_client`), network namespaces and peer hosts (`netns`), a
stand-in HTTP service (`responder`), an OTLP/gRPC receiver (`otlp_grpc`), a Kubernetes control
plane (`kubernetes`). tests/conftest.py holds only fixtures; benchmarks use these too."""
