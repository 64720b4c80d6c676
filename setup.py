from setuptools import setup

setup(cffi_modules=["plugin_host/native/build_ffi.py:ffibuilder"])
