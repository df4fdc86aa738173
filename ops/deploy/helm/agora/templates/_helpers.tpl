{{- define "agora.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agora.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "agora.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The gateway's bearer token: the saga sends it, the bundled gateway requires it. Optional for the saga, whose real processor may take other credentials. */}}
{{- define "agora.gatewayTokenEnv" -}}
- name: AGORA_GATEWAY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secret.name }}
      key: {{ .root.Values.secret.gatewayTokenKey }}
      optional: {{ .optional }}
{{- end -}}

{{/* The variables every agora process gets: the shared settings, and the secrets. */}}
{{- define "agora.secretEnv" -}}
- name: AGORA_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.jwtSecretKey }}
- name: AGORA_DATA_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.dataKeyKey }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.databaseUrlKey }}
{{- end -}}
