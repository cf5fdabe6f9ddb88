wrk.path = "http:///metrics?kubernetes-audience=bench-http"
