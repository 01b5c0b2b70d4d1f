// Package deploy holds the tests of Signet's container image
// (deploy/Dockerfile) and Helm chart (deploy/helm/signet): they parse, lint
// and render what a platform team would deploy, and check it against what the
// signet binary serves and how its config is checked at startup.
package deploy
