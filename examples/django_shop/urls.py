from django.urls import path

from examples.django_shop.shop import views

urlpatterns = [
    path("signup", views.signup),
    path("tasks/<str:task_id>", views.task_status),
]
