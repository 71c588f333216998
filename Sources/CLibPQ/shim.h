// PostgreSQL's client library (Debian: libpq-dev). The header lives in
// /usr/include/postgresql, which Package.swift adds to the search path.
#include <postgresql/libpq-fe.h>
