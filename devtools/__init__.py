"""What the tests and the benchmarks both need to run here, and neither owns: a local S3 server.

``tests/`` and ``bench/`` never import each other; what they share lives here (or in the
product, when it is the product's to say). Not part of the installed package.
"""
