"""The load injector and the scenario harness that drive a real Mini FaaS stack."""
