{{/* Names: <fullname>-operator, <fullname>-token-server; fullname is the release name if it
contains "tessera", else <release>-tessera. */}}
{{- define "tessera.fullname" -}}
{{- if contains "tessera" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tessera" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.operator" -}}{{ include "tessera.fullname" . }}-operator{{- end -}}
{{- define "tessera.tokenServer" -}}{{ include "tessera.fullname" . }}-token-server{{- end -}}

{{- define "tessera.keysSecret" -}}
{{- default (printf "%s-keys" (include "tessera.fullname" .)) .Values.keys.secretName -}}
{{- end -}}

{{- define "tessera.labels" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tessera.selector" -}}
app.kubernetes.io/name: tessera
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tessera.image" -}}
{{- printf "%s/tessera-%s:%s" .root.Values.image.registry .name (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "tessera.servicePort" -}}
{{- if .Values.tokenServer.service.port -}}{{ .Values.tokenServer.service.port }}{{- else if .Values.tokenServer.tls.enabled -}}443{{- else -}}80{{- end -}}
{{- end -}}

{{- define "tessera.issuer" -}}
{{- if .Values.issuer -}}
{{- .Values.issuer -}}
{{- else -}}
{{- $scheme := ternary "https" "http" .Values.tokenServer.tls.enabled -}}
{{- $port := include "tessera.servicePort" . -}}
{{- $default := ternary "443" "80" .Values.tokenServer.tls.enabled -}}
{{- printf "%s://%s.%s.svc%s" $scheme (include "tessera.tokenServer" .) .Release.Namespace (ternary "" (printf ":%s" $port) (eq $port $default)) -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard. */}}
{{- define "tessera.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tessera.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
