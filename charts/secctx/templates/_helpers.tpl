{{- define "secctx.labels" -}}
app.kubernetes.io/name: secctx
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "secctx.selector" -}}
app.kubernetes.io/name: secctx
{{- end -}}

{{- define "secctx.serviceName" -}}
{{ .Release.Name }}-webhook
{{- end -}}
