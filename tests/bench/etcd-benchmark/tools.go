//go:build tools

// Package tools pins etcd's own load generator, built with
// "go build go.etcd.io/etcd/tools/benchmark" from this module.
package tools

import _ "go.etcd.io/etcd/tools/benchmark"
