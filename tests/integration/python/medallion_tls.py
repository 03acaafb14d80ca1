"""OASIS's medallion TAXII 2.1 server over TLS that requires a client
certificate: python3 medallion_tls.py PORT CONFIG CERT KEY CLIENT_CA.
(medallion's own launcher serves plain HTTP only.)"""
import json
import ssl
import sys

from medallion import application_instance, register_blueprints, set_config

port, config, cert, key, client_ca = sys.argv[1:6]
with open(config) as f:
    configuration = json.load(f)
set_config(application_instance, "users", configuration)
set_config(application_instance, "taxii", configuration)
set_config(application_instance, "backend", configuration)
register_blueprints(application_instance)

context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.verify_mode = ssl.CERT_REQUIRED
context.load_verify_locations(client_ca)
application_instance.run(host="127.0.0.1", port=int(port), ssl_context=context)
