{{/*
Names. fullname leaves room for the longest suffix ("-metrics") in 63 characters.
*/}}
{{- define "signet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 55 | trimSuffix "-" }}
{{- end }}

{{- define "signet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "signet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels never change between releases: a Deployment's selector is
immutable, so neither the version nor the chart goes in it.
*/}}
{{- define "signet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "signet.labels" -}}
helm.sh/chart: {{ include "signet.chart" . }}
{{ include "signet.selectorLabels" . }}
app.kubernetes.io/version: {{ include "signet.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "signet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "signet.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "signet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "signet.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "signet.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "signet.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "signet.grpcServiceName" -}}
{{- printf "%s-grpc" (include "signet.fullname" .) }}
{{- end }}

{{/*
Where the container finds its files. The config, the policy and the TLS files
share one projected volume, so that the kubelet's atomic updates of the
ConfigMaps and Secrets reach Signet, which re-reads the policy and the
certificates when they change.
*/}}
{{- define "signet.configDir" -}}/etc/signet{{- end }}
{{- define "signet.configFile" -}}/etc/signet/signet.yaml{{- end }}
{{- define "signet.policyFile" -}}/etc/signet/policy.yaml{{- end }}
{{- define "signet.vaultTokenDir" -}}/var/run/secrets/vault{{- end }}
{{- define "signet.vaultTokenFile" -}}/var/run/secrets/vault/token{{- end }}

{{/* Whether a key ring is in Vault. */}}
{{- define "signet.usesVault" -}}
{{- range .Values.config.key_rings }}
{{- if hasPrefix "vault:" .backend }}true{{ end }}
{{- end }}
{{- end }}

{{/* Whether a key ring logs in to Vault with its Kubernetes auth method. */}}
{{- define "signet.vaultKubernetesAuth" -}}
{{- range .Values.config.key_rings }}
{{- if and (hasPrefix "vault:" .backend) (contains "auth=kubernetes" .backend) }}true{{ end }}
{{- end }}
{{- end }}

{{- define "signet.issuer" -}}
{{- if .Values.config.issuer }}
{{- .Values.config.issuer }}
{{- else }}
{{- $host := printf "%s.%s.svc" (include "signet.fullname" .) .Release.Namespace }}
{{- if eq (int .Values.services.public.port) 80 }}
{{- printf "http://%s" $host }}
{{- else }}
{{- printf "http://%s:%d" $host (int .Values.services.public.port) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refusals: values that would render a deployment Signet refuses, or one that
would not work, fail at install with the fix.
*/}}
{{- define "signet.validate" -}}
{{- if and (not .Values.tls.enabled) (not .Values.tls.allowPlaintextDevelopmentMode) }}
{{- fail "tls.enabled=false serves gRPC without TLS or caller authentication: for a development cluster only, set tls.allowPlaintextDevelopmentMode=true as well" }}
{{- end }}
{{- if and .Values.tls.clientCA.secretName .Values.tls.clientCA.configMapName }}
{{- fail "tls.clientCA: set secretName or configMapName, not both" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- range .Values.config.key_rings }}
{{- if and (hasPrefix "local:" .backend) (gt (int $.Values.replicaCount) 1) }}
{{- fail (printf "key ring %s: the local backend keeps its keys in the pod, so %d replicas would publish different JWKS: use Vault, AWS KMS or an HSM, or replicaCount=1 for development" .name (int $.Values.replicaCount)) }}
{{- end }}
{{- if and (hasPrefix "vault:" .backend) (contains "auth=kubernetes" .backend) (not (contains (printf "jwt_file=%s" (include "signet.vaultTokenFile" $)) .backend)) }}
{{- fail (printf "key ring %s: with auth=kubernetes add jwt_file=%s to the backend URI: the chart mounts a token for Vault's audience there, not the default service account token" .name (include "signet.vaultTokenFile" $)) }}
{{- end }}
{{- if and (hasPrefix "vault:///" .backend) (not $.Values.vault.address) }}
{{- fail (printf "key ring %s: %s names no Vault host: set vault.address (VAULT_ADDR)" .name .backend) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Signet's config file: the user's config with the fields the chart owns.
*/}}
{{- define "signet.config" -}}
{{- $c := deepCopy .Values.config }}
{{- $_ := set $c "issuer" (include "signet.issuer" .) }}
{{- $grpc := dict }}
{{- if .Values.tls.enabled }}
{{- $_ := set $grpc "listen" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) }}
{{- $_ := set $grpc "tls" (dict "cert_file" (printf "%s/tls/tls.crt" (include "signet.configDir" .)) "key_file" (printf "%s/tls/tls.key" (include "signet.configDir" .)) "client_ca_file" (printf "%s/tls/ca.crt" (include "signet.configDir" .))) }}
{{- $_ := set $c "policy_file" (include "signet.policyFile" .) }}
{{- else }}
{{- /* Signet refuses plaintext gRPC beyond loopback. */}}
{{- $_ := set $grpc "listen" (printf "127.0.0.1:%d" (int .Values.ports.grpc)) }}
{{- end }}
{{- $_ := set $c "grpc" $grpc }}
{{- $http := deepCopy (default dict (index .Values.config "http")) }}
{{- $_ := set $http "listen" (printf "0.0.0.0:%d" (int .Values.ports.http)) }}
{{- $_ := set $c "http" $http }}
{{- $admin := deepCopy (default dict (index .Values.config "admin")) }}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)) }}
{{- $_ := set $c "admin" $admin }}
{{- if .Values.startup.snapshot.enabled }}
{{- $_ := set $c "state_dir" (include "signet.stateDir" .) }}
{{- end }}
{{- if include "signet.peers" . }}
{{- $ids := .Values.startup.peers.identities }}
{{- if not $ids }}
{{- $ids = list (printf "dns:%s" (include "signet.grpcServiceName" .)) }}
{{- end }}
{{- $addr := printf "%s.%s.svc:%d" (include "signet.peersServiceName" .) .Release.Namespace (int .Values.ports.grpc) }}
{{- $_ := set $c "peers" (dict "addresses" (list $addr) "identities" $ids "timeout" .Values.startup.peers.timeout) }}
{{- end }}
{{- toYaml $c }}
{{- end }}

{{/* Where the key set snapshot lives: an emptyDir. */}}
{{- define "signet.stateDir" -}}/var/lib/signet{{- end }}

{{/* Non-empty when replicas hand each other the key set (mTLS only). */}}
{{- define "signet.peers" -}}
{{- if and .Values.tls.enabled .Values.startup.peers.enabled }}true{{ end }}
{{- end }}

{{/* The headless Service that names every ready replica, for peers. */}}
{{- define "signet.peersServiceName" -}}
{{- printf "%s-peers" (include "signet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
