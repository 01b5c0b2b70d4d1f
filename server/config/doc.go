// Package config is Signet's YAML configuration: its fields, their defaults
// and the validation that names the offending field. docs/configuration.md
// documents every field. It opens nothing: a config that passes Parse can
// still fail at start-up when a backend, a certificate or the policy file
// cannot be read.
package config
